"""``python -m lcm_lora_pack.distill --help``: see :mod:`.cli`."""
import sys

from .cli import main

sys.exit(main())
