"""CompressionJob: make a model cheaper to serve. Model and schema only; the controller comes
later."""

from __future__ import annotations

import enum
from datetime import datetime

from pydantic import ConfigDict, Field, model_validator

from gpucost.api.common import Condition, Costed, GPUAsk, Wire


class Scheme(str, enum.Enum):
    """llmcompressor's preset schemes that vLLM serves (compressed-tensors format)."""

    W4A16 = "W4A16"
    W8A16 = "W8A16"
    W8A8 = "W8A8"
    FP8_DYNAMIC = "FP8_DYNAMIC"


class Quantize(Wire):
    scheme: Scheme = Field(
        Scheme.W4A16,
        description="W4A16 and W8A16: GPTQ weights, 16-bit activations (round-to-nearest when "
        "calibrationSamples is 0); W8A8: SmoothQuant then GPTQ, int8 weights and activations; "
        "FP8_DYNAMIC: fp8 weights, activations quantized per token at run time (no calibration).",
    )
    kv_cache_scheme: str | None = Field(
        None,
        pattern="^FP8$",
        description="FP8 stores the KV cache in 8 bits: half the memory of what dominates a "
        "replica's footprint. Needs calibration samples.",
    )
    calibration_samples: int = Field(
        64, ge=0, le=4096, description="Texts from the dataset's training split GPTQ calibrates on."
    )
    max_seq_length: int = Field(
        512, ge=16, le=131_072, description="Tokens per calibration and evaluation text at most."
    )


class PruneTarget(str, enum.Enum):
    MLP = "mlp"
    LAYERS = "layers"


class Training(Wire):
    """What a method that trains the smaller model back to quality shares."""

    max_seq_length: int = Field(
        128, ge=16, le=131_072, description="Tokens per training block and evaluation text."
    )
    learning_rate: float = Field(
        1e-3,
        gt=0,
        le=1,
        description="Peak AdamW learning rate (cosine schedule, 5 % warm-up); lower it for a "
        "gentle cut, whose fine-tune should move the kept weights little.",
    )


class Prune(Training):
    """Structured pruning: the result is a smaller dense model of the same architecture (vLLM
    serves no sparse weights, so unstructured and 2:4 sparsity are not offered)."""

    target: PruneTarget = Field(
        PruneTarget.MLP,
        description="mlp: remove whole MLP channels (smaller weights); layers: remove whole "
        "decoder layers (smaller weights and a smaller KV cache per token).",
    )
    amount: float = Field(
        gt=0,
        lt=1,
        description="Share of the MLP channels (mlp) or decoder layers (layers) removed.",
    )
    fine_tune_steps: int = Field(
        200,
        ge=0,
        le=1_000_000,
        description="Recovery fine-tune steps (cross-entropy on the training split); 0 skips it.",
    )


class Distill(Training):
    """A student with fewer decoder layers, copied evenly from the teacher, trained on the
    teacher's soft targets: alpha·KL·T² + (1 − alpha)·cross-entropy."""

    student_layers: int | None = Field(
        None, ge=1, le=1000, description="The student's decoder layers; default half the teacher's."
    )
    temperature: float = Field(2.0, gt=0, le=100)
    alpha: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Weight of the soft-target (KL) loss against the hard-label loss.",
    )
    steps: int = Field(300, ge=1, le=1_000_000, description="Training steps.")


class Serving(Wire):
    """The load the compressed model will be served at: it sizes the recommended slice."""

    max_model_len: int = Field(
        4096, ge=16, le=1_048_576, description="Prompt plus output tokens of the longest request."
    )
    concurrency: int = Field(
        8, ge=1, le=4096, description="Sequences of maxModelLen whose KV cache stays resident."
    )


class Method(Wire):
    quantize: Quantize | None = None
    prune: Prune | None = None
    distill: Distill | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.quantize), has(self.prune), has(self.distill)].filter(x, "
                    "x).size() == 1",
                    "message": "set exactly one of method.quantize, method.prune, method.distill",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> "Method":
        if sum(m is not None for m in (self.quantize, self.prune, self.distill)) != 1:
            raise ValueError("set exactly one of method.quantize, method.prune, method.distill")
        return self


class Storage(Wire):
    """Where model, dataset, output and checkpoints live: a PersistentVolumeClaim mounted into the
    worker, so a re-placed attempt finds the checkpoints the last one wrote."""

    claim_name: str = Field(
        min_length=1, max_length=253, description="A PersistentVolumeClaim in the job's namespace."
    )
    mount_path: str = Field(
        "/data",
        min_length=1,
        max_length=1024,
        pattern=r"^/",
        description="Where the worker sees it.",
    )


class CompressionJobSpec(Wire):
    model_uri: str = Field(
        min_length=1,
        max_length=2048,
        description="A Hugging Face model directory (config.json, safetensors, tokenizer): "
        "file:// on the storage claim, s3://bucket/prefix or hf://org/name.",
    )
    method: Method
    dataset: str = Field(
        min_length=1,
        max_length=2048,
        description="Calibration and evaluation text: a .txt (paragraphs) or .jsonl (a text "
        "field) file, split into train and held-out with the job's seed.",
    )
    serving: Serving = Field(
        default_factory=Serving, description="How the result will be served (sizes the slice)."
    )
    output_uri: str = Field(
        min_length=1,
        max_length=2048,
        description="Where the compressed model and results.json go; never deleted by the "
        "operator.",
    )
    gpu: GPUAsk
    image: str = Field("ghcr.io/gpucost/compress:0.1.0", min_length=1, max_length=1024)
    interruptible: bool = Field(
        False, description="May run on spot capacity; the worker checkpoints and resumes."
    )
    deadline: datetime | None = Field(
        None, description="Stop the job (Failed, DeadlineExceeded) if unfinished by then."
    )
    max_cost: float | None = Field(
        None, gt=0, description="Stop the job once its GPU cost in USD reaches this."
    )
    gpu_models: list[str] = Field(
        default_factory=list,
        description="Allowed GPU models (nvidia.com/gpu.product); empty allows any.",
    )
    node_pool_selector: dict[str, str] = Field(
        default_factory=dict, description="Only GPUNodePools whose labels match all of these."
    )
    storage: Storage | None = Field(
        None,
        description="A volume for the URIs (file:// paths under mountPath); with remote URIs it "
        "also holds the staged copies and the checkpoints.",
    )
    credentials_secret: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        description="A Secret in the job's namespace whose keys become the worker's environment: "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for s3://, HF_TOKEN for hf://.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        alias="s3EndpointURL",
        max_length=2048,
        pattern=r"^https?://",
        description="An S3-compatible store that is not AWS (MinIO, SeaweedFS, Ceph): the "
        "worker's AWS_ENDPOINT_URL.",
    )
    pod_annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Added to the worker pod (e.g. for a service mesh or cost allocation).",
    )


class Results(Wire):
    """What the worker measured (its results.json, in short): the numbers a pool's quality gate
    reads and the slice the compressed model needs."""

    method: str | None = Field(None, description="quantize, prune or distill.")
    scheme: str | None = Field(None, description="The quantization scheme (quantize only).")
    weight_bytes_before: int | None = Field(None, ge=0, description="The bf16 weights.")
    weight_bytes_after: int | None = Field(None, ge=0)
    weight_ratio: float | None = Field(None, ge=0)
    perplexity_before: float | None = Field(None, ge=0, description="On the held-out split.")
    perplexity_after: float | None = Field(None, ge=0)
    perplexity_increase_percent: float | None = None
    accuracy_before: float | None = Field(
        None, ge=0, le=1, description="A classifier's, on the held-out split."
    )
    accuracy_after: float | None = Field(None, ge=0, le=1)
    accuracy_change_points: float | None = Field(
        None, description="Percentage points gained (negative: lost)."
    )
    recommended_memory_mib: int | None = Field(
        None,
        alias="recommendedMemoryMiB",
        ge=0,
        description="Weights + KV cache at spec.serving + engine overhead.",
    )
    bf16_memory_mib: int | None = Field(
        None, alias="bf16MemoryMiB", ge=0, description="The same for the original."
    )
    seconds: float | None = Field(None, ge=0)


class CompressionJobStatus(Costed):
    phase: str = Field(
        "Pending",
        description="Pending, Suspended (an enforcing CostBudget is over its limit), Running, "
        "Succeeded or Failed.",
    )
    attempts: int = Field(
        0, ge=0, description="Worker Jobs created: the first run and one per interruption."
    )
    interruptions: int = Field(
        0,
        ge=0,
        description="Attempts lost to a reclaimed or vanished node (resumed from the checkpoint).",
    )
    job_name: str | None = Field(None, description="The batch/v1 Job of the current attempt.")
    node: str | None = None
    gpu_indices: list[int] = Field(default_factory=list)
    start_time: str | None = Field(
        None, description="RFC 3339: when the first attempt started running."
    )
    completion_time: str | None = Field(
        None, description="RFC 3339: when it succeeded or was stopped."
    )
    message: str | None = Field(
        None, description="The worker's last line on failure, or why the operator stopped the job."
    )
    results: Results | None = Field(None, description="Set when the worker succeeded.")
    observed_generation: int | None = Field(None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)


class CompressionJob(Wire):
    spec: CompressionJobSpec
    status: CompressionJobStatus | None = None
