"""Write the shipped teacher's logit-cache files into pretrained/logits/ (run after make_pretrained).

``fit`` reads a teacher's logits from the cache before computing them; these files carry the same
cache keys (the weights' hash, the dataset spec and split), so a first Distill run on the bundled
data starts training at once. A retrained teacher has new keys, and stale files are never read.

    KDVIZ_HOME=$(mktemp -d) python scripts/ship_logits.py
"""

from __future__ import annotations

import shutil

from kdviz.data import load_dataset
from kdviz.engine import SHIPPED_LOGITS, _logit_cache_path, dataset_logits
from kdviz.models import card_fingerprint, load_card

SHIPPED = {"mnist5k-teacher": ("mnist5k", ("train", "val", "test"))}


def main() -> None:
    SHIPPED_LOGITS.mkdir(parents=True, exist_ok=True)
    for teacher, (spec, splits) in SHIPPED.items():
        card = load_card(teacher)
        for split in splits:
            dataset_logits(teacher, spec, split)  # fills the cache in KDVIZ_HOME
            path = _logit_cache_path(card_fingerprint(teacher), card, load_dataset(spec, split))
            if path.parent != SHIPPED_LOGITS:
                shutil.copyfile(path, SHIPPED_LOGITS / path.name)
            print(f"{teacher} on {spec} ({split}): {SHIPPED_LOGITS / path.name}")


if __name__ == "__main__":
    main()
