import sys

from pupsnr_dask.cli import main

sys.exit(main())
