"""The evaluate task: rebuild a trained model, compute its metrics, write metrics.json with the protocol."""

import csv
import json
import logging
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from genlab.metrics import keys, likelihood_table, reconstruction_metrics, vae_likelihood
from genlab.metrics.cache import dataset_key, split_tensors
from genlab.runs import open_run, run_options
from genlab.utils.images import uint8_to_model

log = logging.getLogger(__name__)
PREFIX = "eval/"


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Sample quality (all models), reconstruction (models with `reconstruct`), likelihood (VAEs)."""
    start = time.perf_counter()
    run = open_run(**run_options(cfg), device=cfg.device)
    model, datamodule, ckpt = run.model, run.datamodule(), run.checkpoint
    torch.manual_seed(cfg.seed)
    n = cfg.n_samples or cfg.metrics.eval_n_samples
    values: dict[str, float] = {}
    protocol: dict[str, object] = {
        "checkpoint": str(ckpt),
        "dataset": dataset_key(datamodule),
        "n_samples": n,
        "seed": cfg.seed,
    }
    if hasattr(model, "set_prior"):
        protocol["prior"] = run.prior or "none (uniform codes)"
    # a VQ-VAE without a prior decodes uniform codes: scored only when asked for by name (use_prior=none)
    scored = getattr(model, "can_sample", True) or cfg.get("use_prior") == "none"
    if not scored:
        log.warning("%s has no fitted prior: no sample-quality metrics (fit one with genlab.prior)", ckpt)

    quality = instantiate(cfg.metrics.quality, inception=cfg.metrics.inception_in_evaluate)
    quality.setup(datamodule, splits=("test",))  # reported figures: the test split, never the validation one
    if quality.extractors and scored:
        torch.manual_seed(cfg.seed)  # as the sample_quality callback seeds its test/* samples
        fake = quality.features(model, n)
        metrics, protocols = quality.compute(fake, "test")
        values.update(metrics)
        protocol.update(protocols)
        if keys.CLASSIFIER_ACC in quality.info:
            values[keys.CLASSIFIER_ACC] = quality.info[keys.CLASSIFIER_ACC]

    images, labels = split_tensors(datamodule.reference("test"))
    batches = [uint8_to_model(x) for x in images.split(cfg.metrics.quality.batch_size)]
    if hasattr(model, "reconstruct"):
        values.update(reconstruction_metrics(model, batches))
        values.update(quality.reconstruction_accuracy(model, batches, labels))
        protocol["reconstruction"] = {"split": "test", "n": len(images), "scale": "[0, 1]"}
    if hasattr(model, "posterior") and hasattr(model, "decoder"):
        values.update(vae_likelihood(model, batches, k=cfg.metrics.iwae_k))
        protocol["likelihood"] = {
            "split": "test",
            "n": len(images),
            "iwae_k": cfg.metrics.iwae_k,
            "units": "nats per image",
            "decoder": "Bernoulli",
        }
        _write_table(model, images, labels, cfg, _output_path(cfg, ckpt).parent)

    elapsed = time.perf_counter() - start
    protocol["seconds"] = round(elapsed, 2)
    out = _output_path(cfg, ckpt)
    _write_json(out, {f"{PREFIX}{k}": float(v) for k, v in values.items()}, protocol)
    print(f"genlab.evaluate: {ckpt} -> {out} in {elapsed:.1f} s")
    for key, value in sorted(values.items()):
        print(f"  {PREFIX}{key}: {value:.6g}")
    return values


def _output_path(cfg: DictConfig, ckpt: Path) -> Path:
    """`output` when set, else `<run dir>/metrics.json` (the run dir being the checkpoint's grandparent)."""
    if cfg.get("output"):
        return Path(cfg.output).expanduser()
    if cfg.get("run_dir"):
        return Path(cfg.run_dir).expanduser() / "metrics.json"
    run_dir = ckpt.parent.parent
    return run_dir / "metrics.json" if (run_dir / ".hydra").is_dir() else ckpt.with_suffix(".metrics.json")


def _write_json(path: Path, values: dict[str, float], protocol: dict) -> None:
    """Merge into an existing metrics.json (training's final metrics stay), the protocol under `eval/protocol`."""
    record = json.loads(path.read_text()) if path.is_file() else {}
    record = {k: v for k, v in record.items() if not k.startswith(PREFIX)}
    record.update(values)
    record[f"{PREFIX}protocol"] = protocol
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True))


def _write_table(model, images: torch.Tensor, labels: torch.Tensor, cfg: DictConfig, folder: Path) -> None:
    """The per-image marginal likelihood of the first `metrics.likelihood_table_n` test images, as CSV."""
    indices = list(range(min(cfg.metrics.likelihood_table_n, len(images))))
    rows = likelihood_table(model, uint8_to_model(images[indices]), labels[indices], indices, k=cfg.metrics.iwae_k)
    path = folder / "likelihood_table.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    log.info("Per-image marginal likelihood table: %s", path)
