"""``python -m everyscale ...`` and ``torchrun -m everyscale train ...``: the everyscale CLI.

Under torchrun each rank's uncaught error is recorded (``torch.distributed.elastic``'s
``record``) so that torchrun's failure report shows it.
"""

from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.errors import record

from everyscale.cli import main


@record
def _main() -> int:
    return main()


if __name__ == "__main__":
    sys.exit(_main())
