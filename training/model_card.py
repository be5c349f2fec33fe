"""Markdown model card for a trained model: a pure function of recorded results, tolerant of missing keys."""

HEADLINE_METRICS = (
    ("accuracy", "Accuracy"),
    ("macro_auc", "Macro AUC (one vs rest)"),
    ("covid_sensitivity_at_95_specificity", "COVID sensitivity at 95% specificity"),
)
CLASS_METRICS = (("sensitivity", "Sensitivity"), ("specificity", "Specificity"), ("ppv", "PPV"), ("npv", "NPV"))
LIMITATIONS = """## Known limitations

- **Class and source are confounded in the development set.** Almost every normal and pneumonia image is a child's
  (kaggle-pediatric, Guangzhou); almost every COVID image is an adult's from other hospitals (hannover, cohen-early,
  figure1). High overall scores can come from telling children from adults, or one hospital's scanner from another's,
  rather than from the disease (DeGrave et al., Nature Machine Intelligence 2021). Read the per-source results.
- **Pediatric versus adult.** Normal and non-COVID pneumonia were learnt mostly from children aged 1-5; expect failures
  on adult normal radiographs from a new hospital. The review loop exists to measure and correct this.
- Metrics come from a small test split, split by patient; the 95% intervals resample patients and are wide for
  rare classes and small sources."""


def model_card_render(
    *,
    name: str,
    architecture: str,
    hyperparameters: dict,
    snapshot: dict | None,
    metrics: dict,
    shortcut: dict | None,
    comparison: dict | None,
    reproduce: str,
    gate: dict | None = None,
    decision_rule: dict | None = None,
) -> str:
    """Model card in Markdown; sections with no recorded data say so instead of failing."""
    sections = [
        f"# Model card: {name}",
        "## Intended use\n\n"
        "> **Research only, not a diagnostic device.** This model must not be used to diagnose, triage or treat "
        "patients. Its predictions are suggestions for reviewers on a research platform.",
        _data_section(snapshot),
        "## Architecture\n\n"
        + f"`{architecture}`\n\n"
        + _table(["Hyperparameter", "Value"], [[key, value] for key, value in sorted(hyperparameters.items())])
        + _fine_tune_line(metrics),
        _metrics_section(metrics),
        _calibration_section(metrics),
        _decision_rule_section(decision_rule),
        _per_source_section(metrics.get("per_source") or {}),
        _shortcut_section(shortcut),
    ]
    if comparison is not None:
        sections.append(_comparison_section(metrics, comparison))
    if gate:
        sections.append(gate_table_markdown(gate))
    sections += [LIMITATIONS, "## How to reproduce\n\n" + _code_block(reproduce)]
    return "\n\n".join(sections) + "\n"


def _data_section(snapshot: dict | None) -> str:
    if snapshot is None:
        return "## Data\n\nNo snapshot recorded."
    lines = ["## Data", ""]
    if "id" in snapshot:
        lines.append(f"- Snapshot: {snapshot['id']}")
    if "content_hash" in snapshot:
        lines.append(f"- Content hash: `{snapshot['content_hash']}`")
    counts = snapshot.get("counts") or {}
    if "total" in counts:
        lines.append(f"- Images: {counts['total']}")
    for key, title in (("by_split", "Split"), ("by_class", "Class"), ("by_source", "Source")):
        if counts.get(key):
            lines += ["", _table([title, "Images"], [[k, v] for k, v in counts[key].items()])]
    by_split_class = counts.get("by_split_class")
    if by_split_class:
        classes = sorted({label for per_class in by_split_class.values() for label in per_class})
        rows = [[split, *(per_class.get(label, 0) for label in classes)] for split, per_class in by_split_class.items()]
        lines += ["", _table(["Split", *classes], rows)]
    return "\n".join(lines)


def _metrics_section(metrics: dict) -> str:
    ci = metrics.get("ci") or {}
    lines = ["## Test-split metrics", ""]
    if "n" in metrics:
        lines += [f"{metrics['n']} test images; 95% intervals from a bootstrap over patients.", ""]
    lines.append(
        _table(
            ["Metric", "Value (95% CI)"],
            [[title, _with_ci(metrics.get(key), ci.get(key))] for key, title in HEADLINE_METRICS],
        )
    )
    per_class = metrics.get("per_class") or {}
    if per_class:
        ci_per_class = ci.get("per_class") or {}
        rows = [
            [
                class_name,
                values.get("support", "n/a"),
                *(
                    _with_ci(values.get(key), (ci_per_class.get(class_name) or {}).get(key))
                    for key in (*(key for key, _ in CLASS_METRICS), "auc")
                ),
            ]
            for class_name, values in per_class.items()
        ]
        lines += ["", _table(["Class", "Support", *(title for _, title in CLASS_METRICS), "AUC"], rows)]
    matrix = metrics.get("confusion_matrix")
    class_names = metrics.get("class_names")
    if matrix and class_names:
        lines += [
            "",
            "Confusion matrix (rows: true class, columns: predicted class):",
            "",
            _table(["", *class_names], [[label, *row] for label, row in zip(class_names, matrix, strict=False)]),
        ]
    return "\n".join(lines)


def _fine_tune_line(metrics: dict) -> str:
    step = metrics.get("fine_tune_step")
    if step is None:
        return ""
    return (
        f"\n\nFine-tuned from the active model; the weights went {_number(step)} of the way from its weights to the "
        "tuned ones: the largest step whose validation answers the promotion gate accepted against the active model's."
    )


def _calibration_section(metrics: dict) -> str:
    ece = (metrics.get("calibration") or {}).get("ece")
    lines = ["## Calibration", "", f"- Expected calibration error (15 bins): {_number(ece, digits=3)}"]
    if "temperature" in metrics:
        lines.append(f"- Temperature (fitted on the validation split): {_number(metrics['temperature'])}")
    return "\n".join(lines)


def _per_source_section(per_source: dict) -> str:
    if not per_source:
        return "## Results per source\n\nNo per-source results recorded."
    rows = [
        [
            source,
            values.get("n", "n/a"),
            ", ".join(values.get("classes_present", [])),
            _number(values.get("accuracy")),
            _number(values.get("macro_auc")),
        ]
        for source, values in per_source.items()
    ]
    return (
        "## Results per source\n\n"
        "A macro AUC needs at least two classes in a source; n/a means the source cannot show class separation.\n\n"
        + _table(["Source", "Images", "Classes present", "Accuracy", "Macro AUC"], rows)
    )


def _shortcut_section(shortcut: dict | None) -> str:
    if shortcut is None:
        return "## Shortcut check\n\nNot run."
    lines = ["## Shortcut check", ""]
    if shortcut.get("warning"):
        lines.append("> ⚠ **Shortcut warning: the metrics above may reflect where an image comes from, not disease.**")
        lines += [f"> - {reason}" for reason in shortcut.get("reasons", [])]
    else:
        lines.append("No shortcut warning.")
    lines += [
        "",
        _table(
            ["Check", "Value"],
            [
                ["Source probe balanced accuracy", _number(shortcut.get("source_probe_balanced_accuracy"))],
                [
                    "Class probe balanced accuracy within a source",
                    _number(shortcut.get("class_probe_balanced_accuracy_within_source")),
                ],
                ["Mean macro AUC within a source", _number(shortcut.get("within_source_macro_auc"))],
            ],
        ),
    ]
    return "\n".join(lines)


def _comparison_section(metrics: dict, comparison: dict) -> str:
    active = comparison.get("active_metrics") or {}
    active_name = comparison.get("active_name") or "none"
    decision = "promoted" if comparison.get("promoted") else "not promoted"
    rows = [[title, _number(metrics.get(key)), _number(active.get(key))] for key, title in HEADLINE_METRICS]
    return (
        "## Comparison with the active model\n\n"
        f"Active model: {active_name}. Decision: **{decision}**"
        + (f" ({comparison['reason']})" if comparison.get("reason") else "")
        + ".\n\n"
        + _table(["Metric", "This model", f"Active ({active_name})"], rows)
    )


def _decision_rule_section(rule: dict | None) -> str:
    if not rule:
        return "## Decision rule\n\nArgmax of the temperature-scaled probabilities."
    lines = [
        "## Decision rule",
        "",
        "The deployed answer is the argmax of softmax(log p / T + b), with T and the per-class bias b fitted on the "
        "validation split (cases weighted by source and class as in training); a site with enough validation "
        "cases has its own b (a prior correction). The test-split figures above use exactly this rule.",
        "",
        f"- Temperature: {_number(rule.get('temperature'))}",
        f"- Global bias: {', '.join(_number(b) for b in rule.get('bias', [])) or 'none'}",
    ]
    for site, bias in sorted((rule.get("site_bias") or {}).items()):
        lines.append(f"- Bias for {site}: {', '.join(_number(b) for b in bias)}")
    return "\n".join(lines)


def gate_table_markdown(gate: dict) -> str:
    """The promotion gate's decision and its per-source table (training.gate.GateDecision.as_dict)."""
    header = ["Scope", "Metric", "Patients", "Active", "Candidate", "Difference (95% CI)", "Verdict"]
    rows = [
        [
            row["scope"],
            row["metric"].replace("_", " "),
            row["patients"],
            _number(row["active"]),
            _number(row["candidate"]),
            f"{row['difference']:+.3f} ({row['low']:+.3f} to {row['high']:+.3f})",
            row["verdict"],
        ]
        for row in gate.get("comparisons", [])
    ]
    verdict = "**promote**" if gate.get("promote") else "**keep as candidate**"
    text = f"## Promotion gate\n\nDecision: {verdict}. {gate.get('reason', '')}"
    return text + ("\n\n" + _table(header, rows) if rows else "")


def _number(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _with_ci(value: float | None, interval: list | None) -> str:
    if value is None:
        return "n/a"
    if not interval or None in interval:
        return _number(value)
    return f"{value:.2f} ({interval[0]:.2f}\u2013{interval[1]:.2f})"


def _table(header: list[str], rows: list[list]) -> str:
    if not rows:
        return "_None recorded._"
    lines = [_row(header), _row(["---"] * len(header))]
    lines += [_row(row) for row in rows]
    return "\n".join(lines)


def _row(cells: list) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|").replace("\n", " ") for cell in cells) + " |"


def _code_block(text: str) -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}\n{text.strip()}\n{fence}"
