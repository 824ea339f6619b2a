"""Ship a trained model as the one lenet-predict and lenet-serve read when given none: safetensors
weights and a JSON card inside the package (lenet/served/).

    python -m lenet.served outputs/<run> --figures benchmarks/results/served_model.json
    python -m lenet.served lenet/served/lenet5.safetensors outputs/<seed 3> ...   # the shipped ensemble, more seeds

The card says what the weights are (the network, as an allow-listed spec, and the normalisation
they expect), how the images must be prepared, what trained them (the recipe, the data and its
attribution), the temperature their probabilities are calibrated with (fitted on validation data
by lenet.calibration, unless --temperature gives one) and what they were measured to do. Loading
(lenet.inference.load_weights) reads tensors and JSON only: nothing in either file can run code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from lenet.datafiles import DataError
from lenet.inference import LOAD_ERRORS, SERVED_WEIGHTS, Ensemble, LoadedModel, load_ensemble, load_problem

CARD_FORMAT = "lenet-weights/1"
MNIST_ATTRIBUTION = "MNIST (Y. LeCun, C. Cortes, C. J. C. Burges): the 60,000 training digits (54,000 train, 6,000 validation)"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def training_data(data_hparams: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The data a checkpoint was trained on, with the attribution each source asks for."""
    from lenet.unipen import ATTRIBUTION, SPLIT_SEED

    data = [{"name": data_hparams.get("dataset", "mnist"), "attribution": MNIST_ATTRIBUTION}]
    if "unipen" in (data_hparams.get("sources") or []):
        unipen = data_hparams.get("unipen") or {}
        data.append({
            "name": "unipen",
            "attribution": ATTRIBUTION,
            "licence": "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)",
            "part": f"the training writers of lenet.unipen's writer split (seed {SPLIT_SEED}); its test writers never trained",
            "weight": (data_hparams.get("weights") or {}).get("unipen", 1.0),
            "renders": unipen.get("renders"),
            "styles": unipen.get("styles"),
        })  # fmt: skip
    if "corrections" in (data_hparams.get("sources") or []):
        corrections = data_hparams.get("corrections") or {}
        data.append({
            "name": "corrections",
            "attribution": "digits corrected by the users of lenet-serve --collect (lenet.corrections)",
            "path": corrections.get("path"),
            "writer": corrections.get("writer"),
            "weight": (data_hparams.get("weights") or {}).get("corrections", 1.0),
        })  # fmt: skip
    return data


def card(models: Sequence[LoadedModel], figures: Mapping[str, Any] | None = None, recipe: Mapping[str, Any] | None = None,
         calibration: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The JSON card of one or more loaded checkpoints of one recipe (see the module docstring);
    `calibration` (lenet.calibration.calibrate's) by default the temperature the models answer with."""
    from lenet.models import count_parameters

    preprocess = Path(__file__).with_name("preprocess.py")
    first = models[0]
    cards = shipped_cards(models)
    members = provenance(models, cards)
    return {
        "format": CARD_FORMAT,
        "network": first.model_hparams["net"],
        "members": len(models),  # an ensemble answers with the mean of its members' probabilities
        "parameters": count_parameters(first.net),
        "dataset": first.dataset,  # its mean and std normalise the prepared images (lenet.datasets)
        "preprocessing": {
            "function": "lenet.preprocess.prepare_image",
            "output": "(1, 28, 28) float in 0..1, light ink on black, the digit in a 20 px box centred by mass (MNIST's geometry)",
            "source_sha256": _sha256(preprocess),
        },
        "training": {
            "checkpoints_sha256": [sha for sha, _ in members],
            "recipe": dict(recipe or {}),
            "data": cards[Path(first.checkpoint_path)]["training"].get("data", []) if _is_shipped(first) else training_data(first.data_hparams),
            "best_epochs": [epochs for _, epochs in members],  # each member's best.ckpt: the epochs it had run
        },
        "calibration": dict(calibration or {"temperature": shared_temperature(models)}),
        "figures": dict(figures or {}),
    }


def shared_temperature(models: Sequence[LoadedModel]) -> float:
    """The one temperature the models answer with; members calibrated apart are calibrated again."""
    temperatures = sorted({model.temperature for model in models})
    if len(temperatures) != 1:
        raise ValueError(f"the models answer with different temperatures {temperatures}: ship them with one calibration fitted for the ensemble (python -m lenet.served fits it).")
    return temperatures[0]


def _is_shipped(model: LoadedModel) -> bool:
    return Path(model.checkpoint_path).suffix == ".safetensors"


def shipped_card(weights_path: str | Path) -> dict[str, Any]:
    """The card beside shipped weights (load_weights has checked it when the weights were loaded)."""
    card = json.loads(Path(weights_path).with_suffix(".json").read_text(encoding="utf-8"))
    card.setdefault("training", {})
    return card


def shipped_cards(models: Sequence[LoadedModel]) -> dict[Path, dict[str, Any]]:
    """The card of each shipped weights file among the models' files, each read once."""
    paths = dict.fromkeys(Path(model.checkpoint_path) for model in models if _is_shipped(model))
    return {path: shipped_card(path) for path in paths}


def provenance(models: Sequence[LoadedModel], cards: Mapping[Path, Mapping[str, Any]]) -> list[tuple[str, int | None]]:
    """Each member's checkpoint (sha256) and the epochs its best.ckpt had run. A member read from shipped
    weights (an ensemble grown by more seeds, a model adapted by lenet.adapt) keeps what their card says."""
    found, taken = [], Counter()
    for model in models:
        path = Path(model.checkpoint_path)
        if not _is_shipped(model):
            found.append((_sha256(path), len(model.history)))
            continue
        index, training = taken[path], cards[path]["training"]
        taken[path] += 1
        shas, epochs = training.get("checkpoints_sha256") or [], training.get("best_epochs") or []
        found.append((shas[index] if index < len(shas) else _sha256(path), epochs[index] if index < len(epochs) else None))
    return found


def ship(models: Sequence[LoadedModel], weights_path: str | Path = SERVED_WEIGHTS, figures: Mapping[str, Any] | None = None,
         recipe: Mapping[str, Any] | None = None, calibration: Mapping[str, Any] | None = None) -> Path:  # fmt: skip
    """Write the networks of `models` (one, or an ensemble's members, weights then named `<i>.<name>`) as
    `weights_path` (safetensors) and their card beside it (.json). The weights are the networks' own;
    the calibration's temperature is the card's, applied when they are loaded."""
    if len({json.dumps(model.model_hparams["net"], sort_keys=True) for model in models}) != 1:
        raise ValueError("an ensemble to ship must be of one network: its card names a single one")
    weights_path = Path(weights_path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for i, model in enumerate(models):
        prefix = "" if len(models) == 1 else f"{i}."
        tensors.update({prefix + key: value.detach().to("cpu").clone(memory_format=torch.contiguous_format) for key, value in model.net.state_dict().items()})  # a copy: one model twice shares no memory
    described = card(models, figures, recipe, calibration)  # before writing anything: it may refuse the models
    save_file(tensors, str(weights_path), metadata={"format": CARD_FORMAT})
    weights_path.with_suffix(".json").write_text(json.dumps(described, indent=2) + "\n")
    return weights_path


def model_figures(results_path: Path, model: str) -> dict[str, Any]:
    """The accuracy of `model` (a row's name or checkpoint) on each set of a benchmarks/real_digits.py results file."""
    results = json.loads(results_path.read_text())
    rows = results.get("models") or results.get("rows") or []
    row = next((r for r in rows if model in (r["model"], ",".join(r.get("checkpoints", [])))), None)
    if row is None:
        raise ValueError(f"{results_path} has no row for {model}: its rows are {[r['model'] for r in rows]}")
    figures = {name: round(scores["accuracy"], 4) for name, scores in row["sets"].items()}
    if "usps" in row["sets"]:
        figures["usps_unsure_rate"] = round(row["sets"]["usps"]["unsure_rate"], 4)
    figures["measured_by"] = f"benchmarks/real_digits.py ({results.get('facts', {}).get('date_utc', 'date unknown')})"
    return figures


def one_recipe(models: Sequence[LoadedModel]) -> dict[str, Any]:
    """The recipe all `models` were trained with: their checkpoints' (lenet.experiment.recipe) and the
    cards' of shipped weights among them, which must agree: an ensemble ships one recipe."""
    from lenet.experiment import recipe  # Lightning is imported only to name the recipe

    recipes, cards = {}, shipped_cards(models)
    for model in models:
        path = Path(model.checkpoint_path)
        recipes.setdefault(json.dumps(cards[path]["training"].get("recipe", {}) if _is_shipped(model) else
                                      recipe(model.model_hparams, model.data_hparams), sort_keys=True), []).append(path)  # fmt: skip
    if len(recipes) > 1:
        described = "; ".join(f"{sorted({p.name for p in paths})}: {text}" for text, paths in recipes.items())
        raise ValueError(f"the models were trained with different recipes ({described}): an ensemble to ship is one recipe's seeds.")
    return json.loads(next(iter(recipes)))


def fitted_calibration(models: Sequence[LoadedModel], temperature: float | None, data_dir: str | None) -> dict[str, Any]:
    """The card's calibration: the given temperature, or one fitted on the validation sets (lenet.calibration)."""
    from lenet.calibration import calibrate, checked_temperature

    if temperature is not None:
        return {"temperature": checked_temperature(temperature, "--temperature"), "fitted_on": "given with --temperature"}
    from lenet.evaluation import default_data_dir

    return calibrate(models, data_dir or default_data_dir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lenet.served", description="Ship a checkpoint as the package's served model.")
    parser.add_argument("checkpoints", nargs="+", help="run directories or .ckpt files (trained with experiment=served); several: an ensemble; "
                        "shipped .safetensors weights among them add their members (more seeds for the shipped ensemble)")
    parser.add_argument("--out", type=Path, default=SERVED_WEIGHTS, help=f"weights file (default: {SERVED_WEIGHTS})")
    parser.add_argument("--figures", type=Path, help="a benchmarks/real_digits.py results JSON with a row for this checkpoint")
    parser.add_argument("--model", help="the row's name in --figures (default: the checkpoints' paths, comma-joined)")
    parser.add_argument("--temperature", type=float, help="divide the logits by this (1: uncalibrated; default: fitted on UNIPEN's "
                        "validation writers and MNIST's validation digits in --data-dir, lenet.calibration)")
    parser.add_argument("--data-dir", default=None, help="MNIST and UNIPEN folder for the fit (default: $LENET_DATA_DIR or ./data)")
    args = parser.parse_args(argv)
    try:
        loaded = load_ensemble(args.checkpoints)  # shipped weights among them add their members
    except LOAD_ERRORS as error:
        print(f"lenet.served: {load_problem(error, args.checkpoints)}", file=sys.stderr)
        return 2
    models = loaded.members if isinstance(loaded, Ensemble) else [loaded]
    try:
        if not all(isinstance(model, LoadedModel) for model in models):
            raise ValueError("only checkpoints and .safetensors weights ship, not exported .onnx files: pass the run the export came from.")
        chosen = one_recipe(models)
    except ValueError as error:
        print(f"lenet.served: {error}", file=sys.stderr)
        return 2
    try:
        calibration = fitted_calibration(models, args.temperature, args.data_dir)
    except (DataError, ValueError, OSError) as error:  # DataError (UnipenError too): a missing or damaged data folder
        print(f"lenet.served: cannot fit the temperature ({error}); pass --temperature 1 to ship uncalibrated.", file=sys.stderr)
        return 2
    print(f"temperature {calibration['temperature']}" + (f" (validation NLL {calibration['nll_before']} -> {calibration['nll_after']})"
                                                          if "nll_after" in calibration else ""))  # fmt: skip
    figures = model_figures(args.figures, args.model or ",".join(args.checkpoints)) if args.figures else {}
    path = ship(models, args.out, figures, chosen, calibration)
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
