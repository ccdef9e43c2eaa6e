"""A real, small training loop for the escrow demo: agents fit digit classifiers for a bounty.

Each agent trains a linear classifier (scikit-learn's ``SGDClassifier``, log loss) on the
handwritten digits that ship with scikit-learn (1,797 8x8 images, no download), one pass over
the training split per epoch, and logs the macro F1 on a held-out split to MLflow after every
epoch. The agents differ only in hyper-parameters, which is what decides who reaches the target.
Everything is seeded, so a run is repeatable on one scikit-learn version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pf_platform.escrow.bounties import DEFAULT_AGENT_TAG
from pf_platform.escrow.tracking import ensure_experiment

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass(frozen=True)
class AgentRecipe:
    """One agent's hyper-parameters.

    Attributes:
        agent_id: the agent, written to the run's agent tag.
        alpha: L2 regularisation strength; too much of it caps what the model can learn.
        learning_rate: scikit-learn's schedule name (``optimal``, ``constant``...).
        eta0: the initial learning rate, used by the ``constant`` schedule.
    """

    agent_id: str
    alpha: float
    learning_rate: str = "optimal"
    eta0: float = 0.01

    def describe(self) -> str:
        if self.learning_rate == "constant":
            return f"alpha={self.alpha:g}, constant lr {self.eta0:g}"
        return f"alpha={self.alpha:g}, {self.learning_rate} lr"


# Measured with scikit-learn 1.9 (macro F1 on the held-out 30%, 8 epochs): the over-regularised
# agent peaks near 0.89 and the one with a tiny constant step near 0.85, while the third scores
# above 0.94 from its first epoch. A target of 0.93 leaves each side a wide margin.
DEMO_RECIPES = (
    AgentRecipe("agent-ada", alpha=1.0),
    AgentRecipe("agent-bo", alpha=1e-4, learning_rate="constant", eta0=1e-5),
    AgentRecipe("agent-cy", alpha=1e-3),
)


@dataclass(frozen=True)
class TrainingResult:
    """What one agent's run logged."""

    agent_id: str
    run_id: str
    f1_by_epoch: tuple[float, ...]

    @property
    def best_f1(self) -> float:
        return max(self.f1_by_epoch)


def train_agents(
    client: MlflowClient,
    experiment: str,
    recipes: tuple[AgentRecipe, ...] = DEMO_RECIPES,
    *,
    epochs: int = 8,
    metric: str = "eval/f1",
    agent_tag: str = DEFAULT_AGENT_TAG,
    seed: int = 7,
) -> list[TrainingResult]:
    """Trains one model per recipe, one MLflow run each, logging ``metric`` after every epoch.

    Args:
        client: the tracking store to log to.
        experiment: the experiment name; created when missing.
        recipes: the agents and their hyper-parameters.
        epochs: passes over the training split.
        metric: the key the F1 is logged under.
        agent_tag: the run tag naming the agent.
        seed: seeds the split, the shuffling and the models.

    Returns:
        One result per recipe, in order.
    """
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    features, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.3, random_state=seed, stratify=labels
    )
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    classes = np.unique(labels)

    experiment_id = ensure_experiment(client, experiment)

    results = []
    for recipe in recipes:
        run = client.create_run(
            experiment_id,
            run_name=f"{recipe.agent_id}-digits",
            tags={agent_tag: recipe.agent_id},
        )
        run_id = run.info.run_id
        for name, value in (
            ("alpha", recipe.alpha),
            ("learning_rate", recipe.learning_rate),
            ("eta0", recipe.eta0),
            ("epochs", epochs),
        ):
            client.log_param(run_id, name, value)

        model = SGDClassifier(
            loss="log_loss",
            alpha=recipe.alpha,
            learning_rate=recipe.learning_rate,
            eta0=recipe.eta0,
            random_state=seed,
        )
        order = np.random.default_rng(seed)
        scores = []
        for epoch in range(epochs):
            shuffled = order.permutation(len(x_train))
            model.partial_fit(x_train[shuffled], y_train[shuffled], classes=classes)
            score = float(f1_score(y_test, model.predict(x_test), average="macro"))
            client.log_metric(run_id, metric, score, timestamp=int(time.time() * 1000), step=epoch)
            scores.append(score)
        client.set_terminated(run_id, "FINISHED")
        results.append(TrainingResult(recipe.agent_id, run_id, tuple(scores)))
    return results
