"""Training a smaller model back to quality with transformers' Trainer: a recovery fine-tune after
pruning (cross-entropy on the text, or on a classifier's labels) or distillation from the teacher
(alpha·KL(student‖teacher at T)·T² + (1 − alpha)·CE, Hinton et al.).

The Trainer saves the weights, optimizer, scheduler, RNG states and data position every
``every`` steps into the job's checkpoint folder and is resumed from the last one, so a worker
killed with its spot node continues on the next attempt to the same step count and the same model.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BATCH = 8


@dataclass(frozen=True)
class Trained:
    steps: int
    resumed_from: int
    """The checkpoint's step this attempt started from (0: from the start)."""
    loss: float
    """The last logged training loss."""


def blocks(tokenizer: Any, texts: list[str], length: int) -> list[dict[str, Any]]:
    """A causal LM's examples: the texts as one token stream cut into ``length``-token blocks
    (no padding wasted), each its own label."""
    import torch

    ids = [t for text in texts for t in tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]]
    stream = torch.tensor(ids)
    cut = [stream[i : i + length] for i in range(0, len(stream) - length + 1, length)]
    return [{"input_ids": block, "labels": block} for block in cut]


def labelled(
    tokenizer: Any, texts: list[str], labels: list[int], length: int
) -> list[dict[str, Any]]:
    """A classifier's examples: each text padded or cut to ``length`` tokens, with its class."""
    import torch

    enc = tokenizer(
        texts, truncation=True, max_length=length, padding="max_length", return_tensors="pt"
    )
    return [
        {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor(label)}
        for ids, mask, label in zip(enc["input_ids"], enc["attention_mask"], labels, strict=True)
    ]


def train(
    student: Any,
    teacher: Any | None,
    examples: list[dict[str, Any]],
    *,
    steps: int,
    learning_rate: float,
    alpha: float,
    temperature: float,
    checkpoints: Path | None,
    every: int,
    seed: int,
) -> Trained:
    import torch
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    class Distiller(Trainer):
        def compute_loss(
            self, model: Any, inputs: dict, return_outputs: bool = False, **_: Any
        ) -> Any:
            out = model(**inputs)
            loss = out.loss
            if teacher is not None and alpha > 0:
                with torch.no_grad():
                    target = teacher(**{k: v for k, v in inputs.items() if k != "labels"}).logits
                vocab = out.logits.shape[-1]  # a classifier's classes, a causal LM's tokens
                kl = torch.nn.functional.kl_div(
                    torch.log_softmax(out.logits.reshape(-1, vocab) / temperature, -1),
                    torch.log_softmax(target.reshape(-1, vocab) / temperature, -1),
                    log_target=True,
                    reduction="batchmean",  # per token: the logits are flattened to tokens
                )
                loss = alpha * kl * temperature**2 + (1 - alpha) * loss
            return (loss, out) if return_outputs else loss

    class Progress(TrainerCallback):
        last = float("nan")

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            if logs and "loss" in logs:
                Progress.last = float(logs["loss"])
                step = f"{state.global_step}/{state.max_steps}"
                print(f"step {step} loss {logs['loss']:.4f}", flush=True)

    # no checkpoint folder (a remote output without a claim): nothing is saved, a temporary
    # folder only satisfies the Trainer
    folder = checkpoints or Path(tempfile.mkdtemp(prefix="gpucost-train-"))
    args = TrainingArguments(
        output_dir=str(folder),
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),
        weight_decay=0.01,
        max_grad_norm=1.0,
        logging_steps=max(1, min(every, steps // 10 or 1)),
        save_strategy="steps" if checkpoints else "no",
        save_steps=every,
        save_total_limit=2,
        seed=seed,
        data_seed=seed,
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
    )
    if teacher is not None:
        teacher.eval()
    last = get_last_checkpoint(str(folder)) if checkpoints and folder.is_dir() else None
    trainer = Distiller(model=student, args=args, train_dataset=examples, callbacks=[Progress()])
    trainer.remove_callback(PrinterCallback)  # Progress says it in one line
    if teacher is not None:
        teacher.to(trainer.args.device)  # the Trainer moves only the student (to the GPU)
    trainer.train(resume_from_checkpoint=last)
    resumed = int(Path(last).name.rsplit("-", 1)[1]) if last else 0
    return Trained(steps=trainer.state.global_step, resumed_from=resumed, loss=Progress.last)
