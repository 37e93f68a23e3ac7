"""Generate the demo dataset: short movie-review sentences labelled negative / neutral / positive.

The sentences are built from templates with negation ("is not dull"), contrast ("although
the plot is dull, the cast is superb") and mixed verdicts, plus 4% label noise, so counting
words is not enough and members of different architectures make different mistakes.
Deterministic: `python recipes/demo/make_data.py` rewrites train.csv, valid.csv and test.csv.
"""

import csv
import random
from pathlib import Path

SUBJECTS = ["the film", "this movie", "the plot", "the acting", "the soundtrack", "the ending", "the script",
            "the cast", "the direction", "the cinematography", "the dialogue", "the pacing", "the lead actor",
            "the final act", "the story", "the humour", "the visual effects", "the score"]
POSITIVE = ["wonderful", "brilliant", "moving", "delightful", "gripping", "superb", "charming", "clever",
            "beautiful", "memorable", "thrilling", "heartfelt", "witty", "stunning", "touching", "inventive"]
NEGATIVE = ["dull", "boring", "clumsy", "tedious", "awful", "bland", "messy", "forgettable", "painful",
            "lifeless", "predictable", "shallow", "sloppy", "tiresome", "weak", "confusing"]
FACTS = ["runs about two hours", "was shot in three countries", "is based on a novel", "opens on friday",
         "features a large cast", "is the director's third feature", "was filmed in black and white",
         "is set in the nineteen seventies", "premiered at a festival last spring", "is in two languages",
         "follows a family over one summer", "is a remake of an older film"]
INTENSIFIERS = ["", "", "really ", "truly ", "rather ", "quite ", "very ", "genuinely "]
NEGATIONS = ["not", "hardly", "never", "far from"]
OPENERS = ["", "", "", "honestly, ", "in my opinion ", "to be fair, ", "overall ", "i think "]


def sentence(label: str, rng: random.Random) -> str:
    s, s2 = rng.sample(SUBJECTS, 2)
    good, bad = rng.choice(POSITIVE), rng.choice(NEGATIVE)
    amp, opener = rng.choice(INTENSIFIERS), rng.choice(OPENERS)
    neg = rng.choice(NEGATIONS)
    if label == "positive":
        body = rng.choice([
            f"{s} is {amp}{good}", f"i found {s} {amp}{good}", f"{s} was {good} and {rng.choice(POSITIVE)}",
            f"{s} is {neg} {bad}", f"although {s2} is {bad}, {s} is {amp}{good}",
            f"{s} is {bad} at first but {amp}{good} in the end", f"nobody could call {s} {bad}"])
    elif label == "negative":
        body = rng.choice([
            f"{s} is {amp}{bad}", f"i found {s} {amp}{bad}", f"{s} was {bad} and {rng.choice(NEGATIVE)}",
            f"{s} is {neg} {good}", f"although {s2} is {good}, {s} is {amp}{bad}",
            f"{s} is {good} at first but {amp}{bad} in the end", f"nobody could call {s} {good}"])
    else:
        body = rng.choice([
            f"{s} {rng.choice(FACTS)}", f"{s} is neither {good} nor {bad}", f"{s} is {good} but {s2} is {bad}",
            f"{s} is {bad} but {s2} is {good}", f"{s} {rng.choice(FACTS)} and {s2} {rng.choice(FACTS)}",
            f"some say {s} is {good}, others that it is {bad}"])
    return (opener + body + rng.choice([".", ".", "!", ""])).strip()


def make(n: int, rng: random.Random, noise: float = 0.04) -> list[tuple[str, str]]:
    labels = ["negative", "neutral", "positive"]
    rows = []
    for i in range(n):
        label = labels[i % 3]
        text = sentence(label, rng)
        if rng.random() < noise:  # annotators disagree sometimes
            label = rng.choice(labels)
        rows.append((text, label))
    rng.shuffle(rows)
    return rows


def main() -> None:
    here = Path(__file__).parent
    rng = random.Random(20261124)
    for name, n in (("train", 2400), ("valid", 300), ("test", 600)):
        with open(here / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(make(n, rng))


if __name__ == "__main__":
    main()
