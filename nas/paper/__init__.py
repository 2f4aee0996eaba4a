"""The paper's platform study (ShuffleNetV2, Ma et al., 2018): the guideline experiments G1-G4
(:mod:`~nas.paper.guidelines`), the Table 8 reference networks (:mod:`~nas.paper.zoo`) and their end-to-end
comparison with search results (:mod:`~nas.paper.compare`); MACs of any module (:mod:`~nas.paper.counting`).

torch is imported only when a network is built or counted.
"""

from __future__ import annotations

from nas.paper.compare import CompareRow, check_table_identity, compare_entries, run_compare
from nas.paper.counting import module_macs
from nas.paper.guidelines import (GUIDELINE_RESOLUTION, REPEATS, Experiment, GuidelineResult, Variant, VariantResult,
                                  guideline_experiments, run_guidelines)
from nas.paper.zoo import (COMPLEXITY_GROUPS_MFLOPS, REFERENCES, ReferenceNet, complexity_group, mobilenet_v1,
                           mobilenet_v2, reference_nets, shufflenet_v1)

__all__ = [
    "COMPLEXITY_GROUPS_MFLOPS",
    "CompareRow",
    "Experiment",
    "GUIDELINE_RESOLUTION",
    "GuidelineResult",
    "REFERENCES",
    "REPEATS",
    "ReferenceNet",
    "Variant",
    "VariantResult",
    "check_table_identity",
    "compare_entries",
    "complexity_group",
    "guideline_experiments",
    "mobilenet_v1",
    "mobilenet_v2",
    "module_macs",
    "reference_nets",
    "run_compare",
    "run_guidelines",
    "shufflenet_v1",
]
