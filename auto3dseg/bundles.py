"""Auto3DSeg bundles in a work_dir: input.yaml, generation (BundleGen), training, ensemble and prediction.

Built on MONAI's own step objects (``BundleGen``, ``BundleAlgo.train``, ``AlgoEnsembleBuilder``) instead of one
``AutoRunner.run``, so that each step is a separate command (and a separate SLURM job) and so that the rules
MONAI does not keep are kept here:
- regenerating never deletes trained bundles: it refuses, or with ``force`` moves them to
  ``work_dir/superseded/<bundle>-<time>`` first (MONAI's ``export_to_disk`` rmtree's them);
- run-time overrides (``num_epochs`` for a smoke test) are passed as ``--k=v`` and any key a template writes
  back into its configs (SegResNet's ``config_save_updated``) is restored afterwards;
- training resumes: bundles with a score are skipped, failed ones run again;
- our customisations come from ``auto3dseg.customize`` at every generation (input keys + a post-generation
  hook), never from patches of generated code.
"""

from __future__ import annotations

import copy
import datetime
import glob
import json
import logging
import os
import shutil
import socket
import sys
import time
import traceback
from urllib.parse import urlparse

import yaml
from tqdm import tqdm

from cellmap.atomic import write_yaml_atomic
from auto3dseg.errors import Auto3DSegError
from auto3dseg.nifti import nifti_stem
from auto3dseg.rundata import RunDatalist

__all__ = [
    "BundleError",
    "TemplatesUnavailableError",
    "TrainingFailedError",
    "TEMPLATES_ENV",
    "default_templates_url",
    "resolve_templates",
    "write_work_datalist",
    "build_input",
    "bundle_dirs",
    "has_training_output",
    "generate",
    "train",
    "build_ensemble",
    "predict",
    "list_inputs",
    "output_name",
]

logger = logging.getLogger(__name__)

TEMPLATES_ENV = "AUTO3DSEG_TEMPLATES"
WORK_DATALIST = "datalist.json"
INPUT = "input.yaml"
SUPERSEDED = "superseded"
TRAIN_STATUS = "train_status.yaml"
ENSEMBLE_RECORD = "ensemble.yaml"


class BundleError(Auto3DSegError):
    """A generation/ensemble/predict request that cannot be done as asked; the message says what to pass."""


class TemplatesUnavailableError(BundleError):
    """The algorithm templates cannot be reached (offline with the default URL, or a missing folder)."""


class TrainingFailedError(BundleError):
    """One or more bundles failed to train; rerunning ``--mode train`` resumes them."""


# ----------------------------------------------------------------------------------------------- templates
def default_templates_url() -> str:
    """MONAI's release tarball for ``MONAI_ALGO_HASH`` (default 21ed8e5 for monai 1.5-1.6)."""
    algo_hash = os.environ.get("MONAI_ALGO_HASH", "21ed8e5")
    return (
        "https://github.com/Project-MONAI/research-contributions/releases/download/algo_templates/"
        f"{algo_hash}.tar.gz"
    )


def _reachable(url: str, timeout: float = 3.0) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_templates(templates: str | None = None, check: bool = True) -> str:
    """The templates source: ``templates`` > ``$AUTO3DSEG_TEMPLATES`` > MONAI's release URL.

    A local folder must hold ``<algo>/scripts/algo.py`` subfolders (point at the folder containing ``segresnet``).
    With ``check``, an unreachable URL raises :class:`TemplatesUnavailableError` naming ``--templates``.
    """
    src = templates or os.environ.get(TEMPLATES_ENV) or default_templates_url()
    src = os.fspath(src)
    if urlparse(src).scheme in ("http", "https"):
        if check and not _reachable(src):
            raise TemplatesUnavailableError(
                f"cannot reach {src} (offline?). Auto3DSeg algorithm templates are not part of any pip package: "
                f"download them once where there is network (MONAI's release tarball, or "
                f"Project-MONAI/research-contributions auto3dseg/algorithm_templates at the same hash) and pass "
                f"--templates /path/to/algorithm_templates (or set {TEMPLATES_ENV})"
            )
        return src
    src = os.path.abspath(src)
    if not os.path.isdir(src) or not glob.glob(os.path.join(src, "*", "scripts", "algo.py")):
        raise TemplatesUnavailableError(
            f"--templates {src}: not a folder of algorithm templates (expected <algo>/scripts/algo.py inside, "
            "e.g. .../algorithm_templates with segresnet/ and swinunetr/)"
        )
    return src


# ------------------------------------------------------------------------------------------------ inputs
def write_work_datalist(dl: RunDatalist, work_dir: str, num_fold: int | None = None) -> tuple:
    """Copy the datalist into ``work_dir/datalist.json`` (paths stay relative to ``dl.dataroot``).

    Folds: the datalist's own (0..K-1, each with a case) are kept; without fold keys, cases get ``i % n``.
    Returns ``(path, num_fold)``; ``num_fold`` defaults to every fold and may not exceed K.
    """
    raw = copy.deepcopy(dl.raw)
    folds = dl.folds
    if not folds:
        n = int(num_fold or min(5, len(dl.cases)))
        if n < 2 or n > len(dl.cases):
            raise BundleError(f"{dl.path}: no `fold` keys and {len(dl.cases)} case(s): pass --num_fold between 2 and {len(dl.cases)}")
        for i, item in enumerate(raw["training"]):
            item["fold"] = i % n
        folds = list(range(n))
    elif folds != list(range(len(folds))):
        raise BundleError(f"{dl.path}: folds {folds} must be 0..K-1 with every fold holding a case; re-run the conversion")
    k = len(folds)
    num_fold = k if num_fold is None else int(num_fold)
    if not 1 <= num_fold <= k:
        raise BundleError(f"--num_fold {num_fold}: the datalist has {k} folds (0..{k - 1}); pass 1..{k}")
    path = os.path.join(work_dir, WORK_DATALIST)
    write_yaml_atomic(path, raw)
    return path, num_fold


def build_input(dl: RunDatalist, config: dict, work_datalist: str, algo: str | None = None) -> dict:
    """Auto3DSeg input dict: datalist, dataroot, modality, class_names + ``config['input']`` + our hooks.

    With ``algo``, ``auto3dseg.customize.input_overrides(algo, config, datalist)`` is merged last. Nested
    overrides such as ``network#init_filters`` go only into the per-algo input (SegResNet sets them with
    ``parser[k] = v``); the shared input.yaml leaves them out.
    """
    inp = {
        "name": dl.raw.get("name", "cellmap"),
        "task": "segmentation",
        "modality": str(config["modality"]).lower(),
        "datalist": os.path.abspath(work_datalist),
        "dataroot": dl.dataroot,
        "class_names": copy.deepcopy(list(dl.class_names)) or None,
    }
    if inp["class_names"] is None:
        del inp["class_names"]
    extra = copy.deepcopy(config.get("input") or {})
    if algo is None:  # the shared input.yaml (ensemble, MONAI tools) is read by ConfigParser: no `a#b` ids
        extra = {k: v for k, v in extra.items() if "#" not in str(k)}
    inp.update(extra)
    if algo is not None:
        from auto3dseg import customize

        inp.update(customize.input_overrides(algo, config, dl.raw) or {})
    return inp


# ------------------------------------------------------------------------------------------------ bundles
def bundle_dirs(work_dir: str) -> dict:
    """``{bundle name: path}`` of generated bundles (folders with an algo object) directly in ``work_dir``."""
    out = {}
    for path in sorted(glob.glob(os.path.join(work_dir, "*", "algo_object.*"))):
        out[os.path.basename(os.path.dirname(path))] = os.path.dirname(path)
    return out


def has_training_output(bundle_dir: str) -> bool:
    """True when the bundle holds anything training wrote (checkpoints, progress, history)."""
    for pattern in ("**/*.pt", "**/progress.yaml", "**/accuracy_history.csv"):
        if glob.glob(os.path.join(bundle_dir, pattern), recursive=True):
            return True
    return False


def _move_aside(work_dir: str, bundle_dir: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = os.path.join(work_dir, SUPERSEDED, f"{os.path.basename(bundle_dir)}-{stamp}")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.move(bundle_dir, dest)
    logger.warning("moved trained bundle %s to %s", bundle_dir, dest)
    return dest


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def generate(
    dl: RunDatalist,
    work_dir: str,
    algos,
    templates: str,
    config: dict,
    num_fold: int | None = None,
    force: bool = False,
    keep_trained: bool = False,
    insist_swinunetr: bool = False,
) -> list:
    """Generate ``<algo>_<fold>`` bundles with MONAI's BundleGen; returns the bundle folders written.

    Args:
        templates: folder or URL (see :func:`resolve_templates`).
        force: regenerate over trained bundles after moving them to ``work_dir/superseded/``.
        keep_trained: instead of refusing, keep an algo whose bundles hold training output (``--mode full``).
        insist_swinunetr: generate SwinUNETR without a CUDA GPU (MONAI's generation then fails).

    Raises:
        BundleError: ``datastats.yaml`` missing, trained bundles without ``force``, unknown algo.
    """
    from monai.apps.auto3dseg import BundleGen

    from auto3dseg import customize

    work_dir = os.path.abspath(work_dir)
    stats = os.path.join(work_dir, "datastats.yaml")
    if not os.path.isfile(stats):
        raise BundleError(f"{stats} not found: run `run_auto3dseg --mode analyze` first")
    work_datalist, num_fold = write_work_datalist(dl, work_dir, num_fold)
    write_yaml_atomic(os.path.join(work_dir, INPUT), build_input(dl, config, work_datalist))
    existing = bundle_dirs(work_dir)
    written = []
    for algo in algos:
        if algo == "swinunetr" and not insist_swinunetr and not _cuda_available():
            logger.warning(
                "skipping swinunetr: it needs a CUDA GPU (MONAI's bundle generation calls torch.cuda.mem_get_info "
                "and training uses cuda:0). Pass --insist_swinunetr to try anyway."
            )
            continue
        mine = {n: p for n, p in existing.items() if n.rsplit("_", 1)[0] == algo}
        trained = sorted(n for n, p in mine.items() if has_training_output(p))
        if trained and not force:
            if keep_trained:
                logger.info("keeping existing %s bundles (trained: %s); --force regenerates", algo, trained)
                continue
            raise BundleError(
                f"{work_dir}: bundle(s) {', '.join(trained)} hold trained work; regenerating would delete it. "
                "Pass --force to move them to "
                f"{os.path.join(work_dir, SUPERSEDED)} and regenerate, or use --mode train to continue"
            )
        for name in trained:
            _move_aside(work_dir, mine[name])
        algo_input = os.path.join(work_dir, f"input_{algo}.yaml")
        write_yaml_atomic(algo_input, build_input(dl, config, work_datalist, algo))
        try:
            gen = BundleGen(
                algo_path=work_dir,
                algos=[algo],
                templates_path_or_url=templates,
                data_stats_filename=stats,
                data_src_cfg_name=algo_input,
            )
        except ValueError as err:
            raise BundleError(f"--algos {algo}: not available from templates {templates} ({err})") from err
        gen.generate(work_dir, num_fold=num_fold)
        for item in gen.get_history():
            bundle_dir = os.path.join(work_dir, item["identifier"])
            customize.after_generation(bundle_dir, algo, config, dl.raw)
            written.append(bundle_dir)
    record_path = os.path.join(work_dir, "generation.yaml")
    record = {}
    if os.path.isfile(record_path):
        with open(record_path) as fh:
            record = yaml.safe_load(fh) or {}
    for b in written:
        record[os.path.basename(b)] = {"templates": templates, "generated": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_yaml_atomic(record_path, record)
    return written


# ------------------------------------------------------------------------------------------------ training
def _device_setting(gpus) -> dict:
    if gpus is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is None:
            import torch

            visible = ",".join(str(i) for i in range(torch.cuda.device_count()))
    elif isinstance(gpus, (list, tuple)):
        visible = ",".join(str(g) for g in gpus)
    else:
        visible = str(gpus)
    bin_dir = os.path.dirname(sys.executable)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")  # torchrun of this environment
    return {
        "CUDA_VISIBLE_DEVICES": visible,
        "n_devices": max(1, len([v for v in visible.split(",") if v])),
        "NUM_NODES": 1,
        "MN_START_METHOD": "bcprun",
        "CMD_PREFIX": sys.executable + " ",
    }


def _get_path(d, keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return False, None
        d = d[k]
    return True, d


def _restore_overrides(snapshot: dict, overrides: dict) -> None:
    """Put back, in each config file, the values the run overrides replaced (or drop keys they added)."""
    for path, old_text in snapshot.items():
        if not os.path.isfile(path):
            continue
        with open(path) as fh:
            new_text = fh.read()
        if new_text == old_text:
            continue
        old = yaml.safe_load(old_text) if old_text else {}
        new = yaml.safe_load(new_text) or {}
        changed = False
        for key in overrides:
            keys = str(key).split("#")
            had, old_v = _get_path(old, keys)
            has, new_v = _get_path(new, keys)
            if (had, old_v) == (has, new_v):
                continue
            parent = new
            for k in keys[:-1]:
                parent = parent.setdefault(k, {})
            if had:
                parent[keys[-1]] = old_v
            else:
                parent.pop(keys[-1], None)
            changed = True
        if changed:
            write_yaml_atomic(path, new)
            logger.info("restored run overrides %s in %s", sorted(overrides), path)


def _save_algo(algo, score) -> None:
    from monai.auto3dseg import utils as a3u

    if hasattr(a3u, "algo_to_json"):
        a3u.algo_to_json(algo, template_path=algo.template_path, best_metric=score)
    else:  # monai 1.5: pickle
        a3u.algo_to_pickle(algo, template_path=algo.template_path, best_metric=score)


def _completed(h: dict) -> bool:
    """A bundle counts as trained only when a finished run recorded its score in the algo object.

    (MONAI's own check also accepts a progress.yaml, which SegResNet writes during training, so an interrupted
    fold would look trained.) Legacy pickled algo objects fall back to MONAI's check.
    """
    path = os.path.join(h["algo_instance"].output_path, "algo_object.json")
    if not os.path.isfile(path):
        return bool(h["is_trained"])
    with open(path) as fh:
        return json.load(fh).get("best_metric") is not None


def _resume_params(name: str, bundle_dir: str) -> dict:
    """Run params that continue an interrupted fold from its last checkpoint, where the template supports it."""
    if name.startswith("segresnet"):  # segmenter.py checkpoint_load: restores epoch and best metric
        ckpt = os.path.join(bundle_dir, "model", "model_final.pt")
        if os.path.isfile(ckpt):
            logger.info("%s: continuing from %s", name, ckpt)
            return {"pretrained_ckpt_name": ckpt, "continue": True}
    return {}


def train(
    work_dir: str,
    config: dict,
    num_epochs: int | None = None,
    gpus=None,
    bundles=None,
    retrain: bool = False,
) -> dict:
    """Train every generated bundle without a score (``retrain``: all) one after another.

    Args:
        num_epochs: run override (not written into bundle configs).
        gpus: ``"0,1"``, a list, or None for ``$CUDA_VISIBLE_DEVICES`` / all visible.
        bundles: names to train (e.g. one per SLURM array task); default all.

    Returns ``{bundle: score}`` of the bundles trained now; writes ``<bundle>/train_status.yaml`` (running,
    done with its score, or failed with the error). An interrupted SegResNet fold continues from its last
    checkpoint (``pretrained_ckpt_name`` + ``continue``); other templates restart the fold.

    Raises:
        TrainingFailedError: naming each failed bundle and its log; a rerun resumes.
    """
    from monai.apps.auto3dseg.utils import import_bundle_algo_history

    work_dir = os.path.abspath(work_dir)
    history = import_bundle_algo_history(work_dir, only_trained=False)
    if not history:
        raise BundleError(f"{work_dir}: no generated bundles; run `run_auto3dseg --mode generate` first")
    if bundles:
        wanted = set([bundles] if isinstance(bundles, str) else bundles)
        unknown = wanted - {h["identifier"] for h in history}
        if unknown:
            raise BundleError(f"--bundles {sorted(unknown)}: not in {work_dir} (have {[h['identifier'] for h in history]})")
        history = [h for h in history if h["identifier"] in wanted]
    todo = [h for h in history if retrain or not _completed(h)]
    for h in history:
        if h not in todo:
            logger.info("skipping already trained bundle %s (score %s)", h["identifier"], h["best_metric"])
    params = dict(config.get("train_params") or {})
    if num_epochs is not None:
        params["num_epochs"] = int(num_epochs)
    device = _device_setting(gpus)
    scores, failed = {}, []
    for h in tqdm(todo, desc="train", unit="bundle"):
        name, algo = h["identifier"], h["algo_instance"]
        status_path = os.path.join(algo.output_path, TRAIN_STATUS)  # per bundle: array tasks run in parallel
        run_params = dict(params)
        if name.startswith("swinunetr"):
            use = (config.get("swinunetr") or {}).get("use_pretrain", "auto")
            if use is False or (use == "auto" and not _reachable("https://api.ngc.nvidia.com")):
                run_params["use_pretrain"] = False  # never download weights offline
        if not retrain:
            run_params.update(_resume_params(name, algo.output_path))
        configs = sorted(glob.glob(os.path.join(algo.output_path, "configs", "*")))
        snapshot = {p: open(p).read() for p in configs if os.path.isfile(p)}
        start = time.time()
        write_yaml_atomic(status_path, {"state": "running", "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                        "params": {k: str(v) for k, v in run_params.items()}})
        try:
            algo.train(run_params, device)
            score = algo.get_score()
        except Exception as err:  # subprocess failure or missing progress: record and go on
            failed.append(name)
            status = {"state": "failed", "error": f"{type(err).__name__}: {err}"[-2000:]}  # the cause is last
            logger.error("training %s failed:\n%s", name, traceback.format_exc())
        else:
            _save_algo(algo, score)
            scores[name] = score
            status = {"state": "done", "score": float(score)}
        finally:
            _restore_overrides(snapshot, run_params)
        status["seconds"] = round(time.time() - start, 1)
        write_yaml_atomic(status_path, status)
    if failed:
        raise TrainingFailedError(
            f"{len(failed)} bundle(s) failed to train: {', '.join(failed)} (errors in <bundle>/{TRAIN_STATUS}; "
            "the training output above names the cause). Fix it and rerun `run_auto3dseg --mode train`: trained "
            "bundles are kept and skipped, failed ones run again (SegResNet continues from model_final.pt)."
        )
    return scores


# ------------------------------------------------------------------------------------------------ ensemble
def build_ensemble(work_dir: str, config: dict):
    """MONAI's ensemble of the trained bundles (``config['ensemble']``); records the choice in ensemble.yaml."""
    from monai.apps.auto3dseg import AlgoEnsembleBestByFold, AlgoEnsembleBestN, AlgoEnsembleBuilder
    from monai.apps.auto3dseg.utils import import_bundle_algo_history

    work_dir = os.path.abspath(work_dir)
    history = [h for h in import_bundle_algo_history(work_dir, only_trained=True) if _completed(h)]
    if not history:
        raise BundleError(f"{work_dir}: no trained bundles; run `run_auto3dseg --mode train` first")
    ens_cfg = config.get("ensemble") or {}
    method = ens_cfg.get("method", "AlgoEnsembleBestByFold")
    if method == "AlgoEnsembleBestByFold":
        folds = sorted({int(h["identifier"].rsplit("_", 1)[1]) for h in history})
        if folds != list(range(len(folds))):
            raise BundleError(
                f"{work_dir}: trained folds {folds} are not 0..K-1; train the missing folds or set "
                "ensemble.method: AlgoEnsembleBestN in the config"
            )
        ensemble = AlgoEnsembleBestByFold(n_fold=len(folds))
    elif method == "AlgoEnsembleBestN":
        ensemble = AlgoEnsembleBestN(n_best=int(ens_cfg.get("n_best", 2)))
    else:
        raise BundleError(f"ensemble.method {method!r}: use AlgoEnsembleBestByFold or AlgoEnsembleBestN")
    builder = AlgoEnsembleBuilder(history, os.path.join(work_dir, INPUT))
    builder.set_ensemble_method(ensemble)
    ens = builder.get_ensemble()
    chosen = [{"bundle": a["identifier"], "score": float(a["best_metric"])} for a in ens.get_algo_ensemble()]
    write_yaml_atomic(os.path.join(work_dir, ENSEMBLE_RECORD), {"method": method, "mode": ens_cfg.get("mode", "mean"), "bundles": chosen})
    return ens


def output_name(image_path: str) -> str:
    """Prediction file name for an input image: ``<dataset>_<crop>_0000.nii.gz`` -> ``<dataset>_<crop>.nii.gz``."""
    base = nifti_stem(image_path)
    if base.endswith("_0000"):
        base = base[: -len("_0000")]
    return base + ".nii.gz"


def list_inputs(work_dir: str, inputs=None) -> list:
    """Absolute image paths: the work datalist's ``testing`` list, a datalist's, a NIfTI folder, or one file."""
    if inputs is None:
        inputs = os.path.join(work_dir, WORK_DATALIST)
        if not os.path.isfile(inputs):
            raise BundleError(f"{inputs} not found: run generate first or pass --input")
    inputs = os.path.abspath(os.fspath(inputs))
    if os.path.isdir(inputs):
        files = sorted(glob.glob(os.path.join(inputs, "*.nii.gz")) + glob.glob(os.path.join(inputs, "*.nii")))
        if not files:
            raise BundleError(f"--input {inputs}: no .nii/.nii.gz images in this folder")
        return files
    if inputs.endswith((".json", ".yaml")):
        with open(inputs) as fh:
            raw = json.load(fh) if inputs.endswith(".json") else yaml.safe_load(fh)
        root = os.path.dirname(inputs)
        if inputs.endswith(WORK_DATALIST) and os.path.isfile(os.path.join(os.path.dirname(inputs), INPUT)):
            with open(os.path.join(os.path.dirname(inputs), INPUT)) as fh:
                root = yaml.safe_load(fh)["dataroot"]
        files = []
        for item in raw.get("testing") or []:
            image = item["image"] if isinstance(item, dict) else item
            image = image[0] if isinstance(image, list) else image
            files.append(image if os.path.isabs(image) else os.path.normpath(os.path.join(root, image)))
        if not files:
            raise BundleError(f"{inputs}: empty `testing` list; pass --input with a folder of NIfTI images")
        return files
    if os.path.isfile(inputs):
        return [inputs]
    raise BundleError(f"--input {inputs}: not a folder, datalist or NIfTI file")


def predict(work_dir: str, config: dict, inputs=None, output_dir=None, force: bool = False) -> list:
    """Ensemble prediction of each input image into ``output_dir`` (default ``work_dir/ensemble_output``).

    Output per image: ``<name>.nii.gz`` (see :func:`output_name`), uint8, the input's grid; with sigmoid
    (multi-label) one channel per class of ``class_names``. Existing outputs are kept unless ``force``
    (so an interrupted prediction resumes). Returns the output paths in input order.
    """
    work_dir = os.path.abspath(work_dir)
    files = list_inputs(work_dir, inputs)
    output_dir = os.path.abspath(output_dir or os.path.join(work_dir, "ensemble_output"))
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(work_dir, INPUT)) as fh:
        sigmoid = bool(yaml.safe_load(fh).get("sigmoid", False))
    ens = build_ensemble(work_dir, config)
    mode = (config.get("ensemble") or {}).get("mode", "mean")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise BundleError(f"{len(missing)} input image(s) do not exist, e.g. {missing[0]}")
    out_paths = []
    tmp_dir = os.path.join(output_dir, ".partial")
    for f in tqdm(files, desc="predict", unit="image"):
        dest = os.path.join(output_dir, output_name(f))
        out_paths.append(dest)
        if os.path.isfile(dest) and not force:
            continue
        os.makedirs(tmp_dir, exist_ok=True)
        saver = {
            "_target_": "SaveImage",
            "output_dir": tmp_dir,
            "output_postfix": "pred",
            "output_ext": ".nii.gz",
            "separate_folder": False,
            "output_dtype": "$np.uint8",
            "resample": False,
            "print_log": False,
            "savepath_in_metadict": True,
        }
        saved = ens({"infer_files": [{"image": f}], "mode": mode, "sigmoid": sigmoid, "image_save_func": saver})
        if not saved or not saved[0] or not os.path.isfile(saved[0]):
            raise BundleError(f"{f}: the ensemble wrote no prediction (see the log above)")
        os.replace(saved[0], dest)
    if os.path.isdir(tmp_dir) and not os.listdir(tmp_dir):
        os.rmdir(tmp_dir)
    return out_paths
