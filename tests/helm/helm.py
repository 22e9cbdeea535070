"""Drives the real Helm v4 engine (PyPI helm-python-sdk, which embeds it as a
library; no helm binary) for tests/chart.rs, and prints JSON on stdout.

    helm.py lint   CHART [VALUES.yaml]
    helm.py render CHART RELEASE NAMESPACE [VALUES.yaml]

lint prints Helm's lint report; render prints {template path: manifest}.
A Helm error exits 2 with the error on stderr (a render the chart refuses,
e.g. with `fail`, is such an error).
"""

import json
import sys

import helm_python as helm


def values(argv, i):
    if len(argv) <= i:
        return None
    with open(argv[i], encoding="utf-8") as f:
        return helm.values_from_yaml(f.read())


def main(argv):
    helm.disable_logging()
    try:
        if argv[1] == "lint":
            out = helm.lint(argv[2], values(argv, 3), strict=True)
        elif argv[1] == "render":
            with helm.Chart.load(argv[2]) as chart:
                out = chart.render(
                    values(argv, 5), name=argv[3], namespace=argv[4], is_install=True
                )
        else:
            sys.exit(f"helm.py: unknown command {argv[1]!r}")
    except helm.HelmError as e:
        print(f"helm.py {' '.join(argv[1:])}: {e}", file=sys.stderr)
        return 2
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
