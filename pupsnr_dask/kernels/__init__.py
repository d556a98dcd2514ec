"""The kernel layer: NumPy + Pillow (+ SciPy) functions on in-memory batches of images.

Every function here takes and returns ``np.ndarray`` batches of whole images, shape
``(n, h, w, 3)``, and nothing else: no Dask, Zarr, fsspec or xarray, and no import of a
``pupsnr_dask`` module outside ``kernels/``. The layers above (storage, pipeline, CLI) call these
kernels, one call per chunk of images; a kernel's result for an image never depends on which
other images share its batch, so results are bit-identical whatever the chunking, workers or
scheduler.

Modules
-------
blocks
    Exact block sums and means (``check_scale``, ``sum_dtype``, ``fold_blocks``, ``block_mean``,
    ``upsample_nearest``): the pooling half of the PU transform.
variants
    The ``true``, ``gray`` and ``mosaic`` variants of img_true and ``pu_kernel``.
metrics
    ``DATA_RANGE``, MSE and PSNR kernels, and the exact integer moment kernel ``pu_mse_kernel``.
image
    One file to one stored image: ``decode_rgb`` and its guards, ``color_score``,
    ``resize_lanczos``, ``load_resized``, ``Record``.
task_variants
    Inputs a U-Net for a given task would see: ``sr<k>``, ``jpeg<q>``, ``noise<sigma>``,
    ``blur<radius>``, and :func:`~pupsnr_dask.kernels.task_variants.parse_variant` for the
    grammar of their names.
quality
    Quality metrics against img_true (``psnr``, ``psnr_y``, ``ssim``) and the fused
    :func:`~pupsnr_dask.kernels.quality.pu_quality_kernel` that scores PU(variant, s) for every
    scale in one pass.
"""
