"""The crowd-label contract in OpenImages' format (labels CSV, vocabulary, many-to-one class
mapping): the embedded profile simulates it, the full profile copies the real files, `oi` curates it."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from selectbench.core.errors import UserError
from selectbench.core.index import make_index

_OI_LABEL_COLUMNS = ("ImageID", "LabelName", "Confidence")


class OpenImagesLabels:
    """OpenImages image-level labels mapped onto class indices (SELECT's OI1000 strategy).

    labels_csv: one or several label files (ImageID,Source,LabelName,Confidence), e.g.
    oidv7-train-annotations-human-imagelabels.csv. class_descriptions_csv: LabelName,DisplayName
    (v6/v7 files have that header; older headerless files also work). mapping_json:
    {LabelName: class_index} (a list of indices is accepted for a label shared by classes).
    """

    name = "oi"
    source = "openimages"

    def __init__(self, labels_csv, class_descriptions_csv, mapping_json, *, chunksize: int = 1_000_000):
        self.labels_csvs = [Path(p) for p in (labels_csv if isinstance(labels_csv, (list, tuple)) else [labels_csv])]
        for p in self.labels_csvs:
            if not p.is_file():
                raise UserError(f"{p}: OpenImages labels file not found")
        self.chunksize = _positive_int(chunksize, "chunksize")
        self.descriptions = _read_oi_descriptions(Path(class_descriptions_csv))
        self.mapping_path = Path(mapping_json)
        self.mapping = _read_oi_mapping(self.mapping_path)
        known = set(self.descriptions["LabelName"])
        unknown = [k for k in self.mapping if k not in known]
        if unknown:
            raise UserError(
                f"{self.mapping_path}: {len(unknown)} label ids not in {class_descriptions_csv} "
                f"(e.g. {', '.join(map(repr, unknown[:5]))}); keys must be LabelName ids like '/m/09j2d'"
            )

    def mapping_table(self) -> pd.DataFrame:
        """One row per (oi_label, label) pair with the OI display name, for reports."""
        pairs = [(k, c) for k, cs in self.mapping.items() for c in cs]
        df = pd.DataFrame(pairs, columns=["oi_label", "label"]).astype({"label": "int64"})
        names = self.descriptions.drop_duplicates("LabelName").set_index("LabelName")["DisplayName"]
        df["display_name"] = df["oi_label"].map(names)
        return df

    def curate(self, verified_only: bool = True, *, chunksize: int | None = None) -> pd.DataFrame:
        """Index rows (sample_id 'oi:IMAGEID', source, label, score=Confidence, oi_label).

        verified_only keeps Confidence == 1 (human-verified positives); otherwise any
        Confidence > 0 is kept. Confidence 0 is a verified *negative* and is never kept. An image
        appears once per mapped class; when several OI labels map to the same class for one image,
        the highest-confidence one (then the smallest label id) is kept.
        """
        chunksize = _positive_int(chunksize, "chunksize") if chunksize is not None else self.chunksize
        table = self.mapping_table()[["oi_label", "label"]]
        wanted = set(table["oi_label"])
        kept = []
        for path in self.labels_csvs:
            for chunk in _read_oi_labels(path, chunksize):
                conf = chunk["Confidence"]
                keep = chunk["LabelName"].isin(wanted) & ((conf == 1.0) if verified_only else (conf > 0))
                if keep.any():
                    kept.append(chunk.loc[keep, list(_OI_LABEL_COLUMNS)])
        if kept:
            df = pd.concat(kept, ignore_index=True).rename(columns={"LabelName": "oi_label", "Confidence": "score"})
            df = df.merge(table, on="oi_label", how="inner")
            df = df.sort_values(["ImageID", "label", "score", "oi_label"], ascending=[True, True, False, True])
            df = df.drop_duplicates(["ImageID", "label"], keep="first")
        else:
            df = pd.DataFrame({"ImageID": [], "oi_label": [], "score": [], "label": []})
        return make_index(
            sample_id=("oi:" + df["ImageID"].astype(str)).to_numpy(),
            source=self.source,
            label=df["label"].to_numpy(dtype=np.int64),
            score=df["score"].to_numpy(dtype=np.float32),
            oi_label=pd.array(df["oi_label"].astype(str).to_numpy(), dtype="string"),
        )

    def unmapped_classes(self, num_classes: int) -> list[int]:
        """Class indices in [0, num_classes) that no OI label maps to (always empty in the shift)."""
        num_classes = _positive_int(num_classes, "num_classes")
        covered = set()
        for k, cs in self.mapping.items():
            for c in cs:
                if c >= num_classes:
                    raise UserError(f"{self.mapping_path}: {k!r} maps to class {c}, outside 0..{num_classes - 1}")
                covered.add(c)
        return [c for c in range(num_classes) if c not in covered]


def _positive_int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise UserError(f"{what}: expected a positive int, got {v!r}")
    return int(v)


def _read_oi_descriptions(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path}: OpenImages class descriptions file not found")
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    header = first.lstrip("\ufeff").startswith("LabelName")
    # keep_default_na=False: real display names include strings pandas would read as missing.
    df = pd.read_csv(
        path,
        header=0 if header else None,
        names=None if header else ["LabelName", "DisplayName"],
        dtype=str,
        keep_default_na=False,
        encoding="utf-8-sig",
    )
    if list(df.columns[:2]) != ["LabelName", "DisplayName"]:
        raise UserError(f"{path}: expected columns LabelName,DisplayName, got {','.join(map(str, df.columns))}")
    return df[["LabelName", "DisplayName"]]


def _read_oi_mapping(path: Path) -> dict[str, list[int]]:
    if not path.is_file():
        raise UserError(f"{path}: OpenImages mapping file not found")
    try:
        raw = json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path}: expected a non-empty object {{label_id: class_index}}")
    out: dict[str, list[int]] = {}
    for k, v in raw.items():
        vs = v if isinstance(v, list) else [v]
        if not vs or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in vs):
            raise UserError(f"{path}: {k!r} maps to {v!r}; expected a class index >= 0 (or a list of them)")
        out[k] = sorted(set(vs))
    return out


def _read_oi_labels(path: Path, chunksize: int) -> Iterator[pd.DataFrame]:
    try:
        cols = pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns
    except (ValueError, pd.errors.ParserError) as e:
        raise UserError(f"{path}: not a readable CSV ({e})") from None
    missing = [c for c in _OI_LABEL_COLUMNS if c not in cols]
    if missing:
        raise UserError(f"{path}: lacks columns {missing} (has {', '.join(cols)})")
    try:
        yield from pd.read_csv(
            path,
            usecols=list(_OI_LABEL_COLUMNS),
            dtype={"ImageID": str, "LabelName": str, "Confidence": np.float64},
            chunksize=chunksize,
            encoding="utf-8-sig",
        )
    except (ValueError, pd.errors.ParserError) as e:
        raise UserError(f"{path}: bad row ({e})") from None
