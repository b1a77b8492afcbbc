"""Train the tiny template for one fold: `python train.py run --config_file=a.yaml,b.yaml --num_epochs=1`."""

import csv
import os
import sys
import time

import fire
import numpy as np
import torch
import yaml
from monai.auto3dseg.utils import datafold_read
from monai.data import DataLoader, Dataset

_here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _here)
from pipeline import load_module  # noqa: E402

P = load_module("tinyseg_pipeline", os.path.join(_here, "pipeline.py"))


def _score(acc):
    """Mean over classes of a metric result (tensor, or (tensor, count) as DiceHelper returns), NaN ignored."""
    if isinstance(acc, (list, tuple)):
        acc = acc[0]
    acc = torch.as_tensor(acc, dtype=torch.float32).flatten()
    acc = acc[~torch.isnan(acc)]
    return float(acc.mean()) if acc.numel() else float("nan")


def _save_updated_config(config_file, override):
    """Write run overrides back into hyper_parameters.yaml, as SegResNet's config_save_updated does.

    (Auto3DSeg templates do this; run_auto3dseg must undo it so smoke-test overrides never persist.)
    """
    files = [f.strip("'\"") for f in (config_file.split(",") if isinstance(config_file, str) else config_file)]
    path = [f for f in files if f.endswith("hyper_parameters.yaml")][0]
    with open(path) as fh:
        cfg = yaml.safe_load(fh)
    cfg.update({k: v for k, v in override.items() if "#" not in k})
    with open(path, "w") as fh:
        yaml.safe_dump(cfg, fh, sort_keys=False)


def run(config_file=None, **override):
    parser = P.read_config(config_file, override)
    config = {k: parser.get_parsed_content(k) for k in parser.get() if k not in ("loss", "metric", "custom_data_transforms")}
    config["custom_data_transforms"] = parser.get("custom_data_transforms")  # raw dicts, as SegResNet
    torch.manual_seed(int(config["seed"]))
    np.random.seed(int(config["seed"]))
    fail_fold = os.environ.get("TINYSEG_FAIL_FOLD")  # test hook: simulate a crash of one fold
    ckpt = config["ckpt_path"]
    os.makedirs(ckpt, exist_ok=True)

    train_files, val_files = datafold_read(
        datalist=config["data_list_file_path"], basedir=config["data_file_base_dir"], fold=int(config["fold"])
    )
    if not val_files:
        raise ValueError(f"fold {config['fold']} has no validation case")
    train_ds = Dataset(train_files, P.transforms(config, train=True))
    val_ds = Dataset(val_files, P.transforms(config, train=False))
    loader = DataLoader(train_ds, batch_size=int(config["batch_size"]), shuffle=True, num_workers=0)

    model = P.network(config)
    loss_fn = parser.get_parsed_content("loss")
    metric = parser.get_parsed_content("metric")
    opt = torch.optim.Adam(model.parameters(), lr=float(config["learning_rate"]))
    sigmoid = bool(config["sigmoid"])
    best, best_epoch, history = -1.0, -1, []
    for epoch in range(int(config["num_epochs"])):
        model.train()
        t0, steps, total = time.time(), 0, 0.0
        while steps < int(config["num_steps_per_epoch"]):
            for batch in loader:
                opt.zero_grad()
                loss = loss_fn(model(batch["image"]), batch["label"])
                loss.backward()
                opt.step()
                total += float(loss)
                steps += 1
                if steps >= int(config["num_steps_per_epoch"]):
                    break
        if fail_fold is not None and int(fail_fold) == int(config["fold"]):
            torch.save(model.state_dict(), os.path.join(ckpt, "model_final.pt"))
            raise RuntimeError(f"TINYSEG_FAIL_FOLD={fail_fold}: simulated crash in epoch {epoch}")
        model.eval()
        scores = []
        with torch.no_grad():
            for item in val_ds:
                prob = P.logits_to_prob(model(item["image"][None]), sigmoid)
                scores.append(_score(metric(prob, item["label"][None])))
        scores = [s for s in scores if not np.isnan(s)]
        val = float(np.mean(scores)) if scores else 0.0
        history.append([epoch, val, total / max(steps, 1), time.time() - t0])
        if val > best:
            best, best_epoch = val, epoch
            torch.save(model.state_dict(), os.path.join(ckpt, "model.pt"))
        torch.save(model.state_dict(), os.path.join(ckpt, "model_final.pt"))
    with open(os.path.join(ckpt, "accuracy_history.csv"), "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t")
        w.writerow(["epoch", "metric", "loss", "time"])
        w.writerows(history)
    _save_updated_config(config_file, override)
    progress = [{"best_avg_dice_score": best, "best_avg_dice_score_epoch": best_epoch, "epochs": len(history)}]
    tmp = os.path.join(ckpt, "progress.yaml.tmp")
    with open(tmp, "w") as fh:
        yaml.safe_dump(progress, fh)
    os.replace(tmp, os.path.join(ckpt, "progress.yaml"))


if __name__ == "__main__":
    fire.Fire()
