"""The defaults and fixed choices of pupsnr, in one place that imports nothing.

The library modules take their defaults from here, and so does the command line, which reads
them to print ``--help`` and to check arguments without importing dask, xarray or zarr (an
argument error is answered in a fraction of a second). Nothing here is restated elsewhere.
"""

from __future__ import annotations

from typing import Literal

#: Side of the square images of an images store (a multiple of 32: every default scale divides it).
DEFAULT_SIZE = 256
#: Colour when the mean of the RGB correlation matrix is below this (docs/definitions.md).
DEFAULT_THRESHOLD = 0.995
#: Images per chunk along ``image`` (and per ingest task); 32 measured best (benchmarks/RESULTS.md).
DEFAULT_CHUNK_SIZE = 32
#: The inputs of the source experiment, in the order of its table.
DEFAULT_VARIANTS = ("true", "gray", "mosaic")
#: PU scales: 256 -> 256, 128, 64, 32, 16, 8 pixels (U-Net depth 0 ... 5).
DEFAULT_SCALES: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
#: How a results store's MSE was computed (its ``method`` attribute).
METHODS = ("moments", "literal")
Method = Literal["moments", "literal"]
#: The splits of an images store.
SPLITS = ("train", "test")
Split = Literal["train", "test", "all"]

#: ``pupsnr advise``: level of the t-intervals, margin to beat p_i, predictions per task.
DEFAULT_CONFIDENCE = 0.95
DEFAULT_MARGIN_DB = 0.0
DEFAULT_BATCH_SIZE = 32

#: ``pupsnr advise --metric``: the quality measures (pupsnr_dask.kernels.quality.METRIC_NAMES).
METRIC_NAMES: tuple[str, ...] = ("psnr", "psnr_y", "ssim")
DEFAULT_METRIC = "psnr"
#: ``pupsnr advise --model``: ONNX model conventions and onnxruntime providers (pupsnr_dask.model).
MODEL_LAYOUTS: tuple[str, ...] = ("NCHW", "NHWC")
MODEL_RANGES: tuple[str, ...] = ("unit", "signed", "uint8")
DEFAULT_PROVIDERS: tuple[str, ...] = ("CPUExecutionProvider",)

#: ``pupsnr verify``: image chunks of a results store recomputed and compared exactly.
DEFAULT_RECOMPUTE = 3
#: ``pupsnr report --html``: lowest and highest images shown per variant and scale.
DEFAULT_TOP = 3
#: Resolution of the pictures drawn (dots per inch).
DEFAULT_DPI = 100

Format = Literal["text", "markdown", "csv", "json"]
#: The formats of the command line's ``--format``.
FORMATS: tuple[Format, ...] = ("text", "markdown", "csv", "json")

#: Cluster connection: seconds to wait for a scheduler, and with no worker during a compute.
DEFAULT_TIMEOUT = 30.0
DEFAULT_NO_WORKER_TIMEOUT = 60.0
SCHEDULER_ENV = "PUPSNR_SCHEDULER"
NO_WORKER_TIMEOUT_ENV = "PUPSNR_NO_WORKER_TIMEOUT"
TLS_ENV = {
    "tls_ca_file": "PUPSNR_TLS_CA_FILE",
    "tls_cert": "PUPSNR_TLS_CERT",
    "tls_key": "PUPSNR_TLS_KEY",
}
STORAGE_OPTIONS_ENV = "PUPSNR_STORAGE_OPTIONS"
#: The local cluster of each command: worker processes (True) or threads in one process (False).
#: Threads start seconds sooner and run as fast on the stores pupsnr wrote (benchmarks/RESULTS.md,
#: "Local cluster of processes or of threads"); ingest decodes files from anywhere, so its
#: workers are processes: a nanny survives a decoder that crashes or runs out of memory, and the
#: batch is retried file by file. ``demo`` ingests the packaged sample photos only.
DEFAULT_PROCESSES: dict[str, bool] = {
    "ingest": True,
    "run": False,
    "verify": False,
    "advise": False,
    "demo": False,
}
#: :func:`pupsnr_dask.cluster.connect`'s default, which may run any of them: ingest's.
DEFAULT_CONNECT_PROCESSES = DEFAULT_PROCESSES["ingest"]
#: ``--kubernetes``: workers, threads and memory of each (deploy/kubernetes/daskcluster.yaml).
DEFAULT_K8S_WORKERS = 4
DEFAULT_K8S_WORKER_THREADS = 2
DEFAULT_K8S_WORKER_MEMORY = "6Gi"
