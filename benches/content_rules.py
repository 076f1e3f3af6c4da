#!/usr/bin/env python3
"""A rule set of N [[policy.content_rule]] for benchmarks (benches/e2e_relay.py --all-steps;
benches/decide.rs builds the same set in Rust): rule i has two literals, `blocked-i` and
`违禁词i`, every tenth also a regex `spam{i}[0-9]{4}`; even rules reject, odd ones mark as
marketing. None matches the benchmarks' traffic, so every message is scanned in full.

Usage: benches/content_rules.py [N]   (prints the TOML)
"""
import sys


def toml(n):
    out = []
    for i in range(n):
        out.append("[[policy.content_rule]]")
        out.append(f'name = "r{i}"')
        out.append(f'literals = ["blocked-{i}", "违禁词{i}"]')
        if i % 10 == 0:
            out.append(f"regex = ['spam{i}[0-9]{{4}}']")
        out.append(f'action = "{"reject" if i % 2 == 0 else "marketing"}"')
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(toml(int(sys.argv[1]) if len(sys.argv) > 1 else 1000), end="")
