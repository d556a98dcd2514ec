from pupsnr_dask.cli import console

console()
