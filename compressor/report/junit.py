"""JUnit XML from gate records, so a CI system shows each gate as a test case."""

from __future__ import annotations

from typing import Any


def junit_xml(gates: list[dict[str, Any]], suite: str = "compressor.verify") -> str:
    """JUnit XML with one test case per gate, so CI systems show each gate as a test."""
    import xml.etree.ElementTree as ET

    failures = sum(not gate["passed"] and not gate.get("inconclusive") for gate in gates)
    root = ET.Element(
        "testsuites", name="compressor", tests=str(len(gates)), failures=str(failures)
    )
    node = ET.SubElement(
        root, "testsuite", name=suite, tests=str(len(gates)), failures=str(failures), errors="0"
    )
    for gate in gates:
        case = ET.SubElement(node, "testcase", classname=suite, name=gate["name"])
        if gate.get("inconclusive"):  # a skipped test: undecided, for the CI job to retry
            ET.SubElement(case, "skipped", message=gate["detail"])
        elif not gate["passed"]:
            failure = ET.SubElement(case, "failure", message=gate["detail"], type="GateFailure")
            failure.text = (
                f"{gate['name']}: value {gate['value']:.6g} must be {gate['comparison']} "
                f"{gate['threshold']:.6g}"
            )
        else:
            ET.SubElement(case, "system-out").text = gate["detail"]
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
