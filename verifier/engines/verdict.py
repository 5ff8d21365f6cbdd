"""The result of deciding one obligation: the contract with users."""

from __future__ import annotations

from dataclasses import dataclass, field

PROVED, REFUTED, UNKNOWN = "proved", "refuted", "unknown"


@dataclass(slots=True, kw_only=True)
class Verdict:
    """proved (engine + artifact), refuted (replayed counterexample) or unknown (reason)."""

    name: str
    kind: str
    verdict: str
    engine: str
    seconds: float = 0.0
    counterexample: dict | None = None  # symbol name -> exact value as a string ("3/4")
    violation: dict | None = None  # the replayed values of the failing atom
    reason: str | None = None
    artifact: str | None = None  # what backs the verdict (an .smt2 file, a residue)
    smt: str | None = None  # the SMT-LIB text z3 answered, when z3 was run
    smt_answer: str | None = None  # z3's answer on exactly that text
    details: dict = field(default_factory=dict)  # boxes, certified bound, best value seen

    def to_json(self) -> dict:
        out = {
            "name": self.name, "kind": self.kind, "verdict": self.verdict,
            "engine": self.engine, "seconds": round(self.seconds, 4),
            "counterexample": self.counterexample, "violation": self.violation,
            "reason": self.reason, "artifact": self.artifact, "smt_answer": self.smt_answer,
        }
        out.update({k: v for k, v in self.details.items() if k not in out})
        if "smt_leaves" in out:  # the texts are files of their own (`<claim>.box<k>.smt2`)
            out["smt_leaves"] = len(out["smt_leaves"])
        if "certificate" in out:  # a file of its own (`<claim>.cert.json`): its size here
            trees = out["certificate"].get("groups") or [out["certificate"]]
            out["certificate"] = {"closed_boxes": sum(len(t["closed"]) for t in trees),
                                  "splits": sum(len(t["splits"]) for t in trees)}
        return out
