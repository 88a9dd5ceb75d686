"""Launchpad configs are derived from the core's settings, so they cannot drift or swap values."""
from __future__ import annotations

import dataclasses

from assets.models import StageBConfig
from assets.retraining import CandidateConfig, PromotionConfig
from pipeline.promotion import PromotionThresholds
from pipeline.training import TrainingRecipe


def _distinct_values(settings: type, exclude: tuple[str, ...]) -> dict:
    """A non-default value for every field, different from each other where the types allow."""
    values = {}
    for i, f in enumerate(dataclasses.fields(settings)):
        if f.name in exclude:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        make = {bool: lambda: not default, int: lambda: default + 100 + i, float: lambda: default + 0.5 + i,
                str: lambda: f"{default}-{i}", dict: lambda: {"x": i}}[type(default)]
        values[f.name] = make()
    return values


CHOICES = {"fitness": "map50_95"}  # fields with a fixed set of values: another valid one


def test_recipe_config_has_the_recipe_fields_and_converts_by_name():
    values = {**_distinct_values(TrainingRecipe, ("device", "workers")), **CHOICES}
    for config_class in (StageBConfig, CandidateConfig):
        assert set(values) <= set(config_class.model_fields)
        recipe = config_class(**values).recipe()
        assert {k: getattr(recipe, k) for k in values} == values
    assert StageBConfig().recipe() == TrainingRecipe()


def test_promotion_config_has_the_thresholds_and_their_defaults():
    assert PromotionConfig().thresholds() == PromotionThresholds()
    values = _distinct_values(PromotionThresholds, ("gated_subsets", "allow_simulated_shadow"))
    thresholds = PromotionConfig(**values).thresholds()
    assert {k: getattr(thresholds, k) for k in values} == values
    # whether a simulated shadow run may count is the deployment's (ShadowPolicy), never the launchpad's
    assert "allow_simulated_shadow" not in PromotionConfig.model_fields and not thresholds.allow_simulated_shadow
