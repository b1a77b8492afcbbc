"""Optuna study handling: storage from a path or URL (SQLite, journal file), seeded sampler, pruner, defaults."""

from pathlib import Path
from typing import Optional

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from seg2d.errors import ConfigError

__all__ = ["make_storage", "open_study", "finished_trials", "run_study"]

_JOURNAL_SUFFIXES = (".log", ".jsonl", ".journal")


def make_storage(storage: str):
    """An Optuna storage from `storage`:
    - `sqlite:///path.db` / other RDB URLs, or a path ending .db/.sqlite: SQLite/RDB (one process);
    - a path ending .log/.jsonl/.journal, or `journal:PATH`: a journal file (many processes, SLURM arrays,
      works on NFS with file locks)."""
    s = str(storage)
    if s.startswith("journal:"):
        return JournalStorage(JournalFileBackend(s[len("journal:"):]))
    if "://" in s:
        return s
    p = Path(s)
    if p.suffix in _JOURNAL_SUFFIXES:
        p.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(p)))
    if p.suffix in (".db", ".sqlite", ".sqlite3"):
        p.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{p.resolve()}"
    raise ConfigError(
        f"--storage {s}: use a SQLite file (study.db or sqlite:///study.db) for one process, or a journal file "
        "(study.log or journal:PATH) shared by several processes / SLURM array tasks"
    )


def open_study(storage: str, study_name: str = "seg2d", seed: Optional[int] = 0, n_startup_trials: int = 10,
               pruner: Optional[optuna.pruners.BasePruner] = None) -> optuna.Study:
    """Create or resume (load_if_exists) a maximising study with a seeded TPE sampler."""
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    return optuna.create_study(storage=make_storage(storage), study_name=study_name, direction="maximize",
                               sampler=sampler, pruner=pruner or optuna.pruners.NopPruner(),
                               load_if_exists=True)


def finished_trials(study: optuna.Study) -> int:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def run_study(study: optuna.Study, objective, n_trials: int, default_params: Optional[dict] = None,
              progress: bool = False) -> int:
    """Enqueue `default_params` as the first trial (once per study), then run trials until the study holds
    `n_trials` finished (complete or pruned) trials in total, so a resumed or shared study stops at the same
    count. Returns the number of trials run by this call."""
    if default_params:
        study.enqueue_trial(default_params, skip_if_exists=True)
    before = finished_trials(study)
    todo = max(0, int(n_trials) - before)
    if todo == 0:
        return 0
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    study.optimize(objective, n_trials=todo, show_progress_bar=progress, gc_after_trial=False,
                   callbacks=[optuna.study.MaxTrialsCallback(int(n_trials), states=states)])
    return finished_trials(study) - before
