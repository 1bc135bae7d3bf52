"""Which optional data sets this machine has, for tests that need one."""


def has_shakespeare() -> bool:
    """True when ../shared/data/tinyshakespeare.txt (or $EVERYSCALE_SHAKESPEARE) is there.

    CI has it beside the checkout; a user's fresh clone may not. Tests calibrated on it skip
    without it, the others fall back to the standard-library corpus (`TEXT_DATA`).
    """
    from everyscale.train.data import shakespeare_path

    try:
        shakespeare_path()
    except FileNotFoundError:
        return False
    return True


HAS_SHAKESPEARE = has_shakespeare()
TEXT_DATA = "shakespeare" if HAS_SHAKESPEARE else "stdlib"
