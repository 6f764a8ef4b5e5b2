"""tools/bicep_types.py and tools/bicep_check.py: infra/'s resources against Azure's resource types.

The first tests run everywhere: an invented bicep-types-az checkout (a work tree on tmp_path
holding one made-up namespace) and invented templates, one per kind of finding and non-finding.
The last ones check the real templates against the real cache (``python -m tools.bicep_types
CHECKOUT``) and skip without it: the definitions are never committed, and CI has no checkout.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tools import bicep_check, bicep_types
from tools.bicep_check import Report, check_source, resources

STR, NAME = {"$ref": "#/0"}, {"$ref": "#/1"}


def lit(value: str) -> dict[str, Any]:
    return {"$type": "StringLiteralType", "value": value}


def prop(ref: int, flags: int = 0) -> dict[str, Any]:
    return {"type": {"$ref": f"#/{ref}"}, "flags": flags}


# One invented namespace, Test.Ns, in bicep-types-az's format: references are "#/<index>".
TYPES: list[dict[str, Any]] = [
    {"$type": "StringType"},  # 0
    {"$type": "StringType", "minLength": 3, "maxLength": 8, "pattern": "^[a-z]+$"},  # 1
    lit("A"), lit("B"),  # 2, 3
    {"$type": "UnionType", "elements": [{"$ref": "#/2"}, {"$ref": "#/3"}]},  # 4: closed enum
    lit("Hot"), lit("Cool"),  # 5, 6
    {"$type": "UnionType", "elements": [{"$ref": "#/5"}, {"$ref": "#/6"}, STR]},  # 7: open enum
    {"$type": "IntegerType", "minValue": 1, "maxValue": 10},  # 8
    {"$type": "BooleanType"},  # 9
    {"$type": "ObjectType", "name": "Item", "properties": {"key": prop(0, 1), "size": prop(8)}},  # 10
    {"$type": "ArrayType", "itemType": {"$ref": "#/10"}},  # 11
    {"$type": "ObjectType", "name": "Tags", "properties": {}, "additionalProperties": STR},  # 12
    {"$type": "ObjectType", "name": "WebTarget", "properties": {"url": prop(0, 1)}},  # 13
    {"$type": "ObjectType", "name": "QueueTarget", "properties": {"queueName": prop(0)}},  # 14
    {"$type": "DiscriminatedObjectType", "name": "Target", "discriminator": "kind",
     "baseProperties": {"retries": prop(8)},
     "elements": {"Web": {"$ref": "#/13"}, "Queue": {"$ref": "#/14"}}},  # 15
    {"$type": "ObjectType", "name": "ThingProperties", "properties": {
        "mode": prop(4), "tier": prop(7), "count": prop(8), "enabled": prop(9), "endpoint": prop(0, 2),
        "items": prop(11), "target": prop(15), "label": prop(1), "code": prop(21)}},  # 16
    {"$type": "ObjectType", "name": "Test.Ns/things", "properties": {
        "id": prop(0, 10), "name": prop(0, 9), "location": prop(0, 1), "tags": prop(12), "properties": prop(16)}},  # 17
    # deployable in a resource group; readable there and in a subscription
    {"$type": "ResourceType", "name": "Test.Ns/things@2024-01-01", "body": {"$ref": "#/17"},
     "writableScopes": 8, "readableScopes": 12},  # 18
    {"$type": "ObjectType", "name": "Unreferenced", "properties": {"x": prop(0)}},  # 19
    {"$type": "ObjectType", "name": "Test.Ns/things", "properties": {"name": prop(0, 9)}},  # 20
    {"$type": "StringType", "pattern": "^\\p{L}+$"},  # 21: a .NET pattern Python's re cannot read
    {"$type": "ResourceType", "name": "Test.Ns/reports@2024-01-01", "body": {"$ref": "#/20"},
     "writableScopes": 0, "readableScopes": 8},  # 22: read-only type
    {"$type": "ObjectType", "name": "Test.Ns/things/parts", "properties": {
        "name": prop(0, 9), "properties": prop(10)}},  # 23
    {"$type": "ResourceType", "name": "Test.Ns/things/parts@2024-01-01", "body": {"$ref": "#/23"}},  # 24
]
OLDER: list[dict[str, Any]] = [
    {"$type": "StringType"},
    {"$type": "ObjectType", "name": "Test.Ns/things", "properties": {"name": prop(0, 9)}},
    {"$type": "ResourceType", "name": "Test.Ns/things@2023-01-01", "body": {"$ref": "#/1"}},
]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bicep-types-az")
    for version, types in (("2024-01-01", TYPES), ("2023-01-01", OLDER)):
        folder = root / "generated" / "test" / "test.ns" / version
        folder.mkdir(parents=True)
        (folder / "types.json").write_text(json.dumps(types))
    return root


@pytest.fixture(scope="module")
def cache(checkout: Path) -> dict[str, Any]:
    wanted = {"Test.Ns/things@2024-01-01", "Test.Ns/things@2022-01-01", "Other.Ns/x@2024-01-01",
              "Test.Ns/reports@2024-01-01", "Test.Ns/things/parts@2024-01-01"}
    return bicep_types.build(bicep_types.Checkout(checkout), wanted)


def check(cache: dict[str, Any], body: str, header: str = "resource t 'Test.Ns/things@2024-01-01' = ") -> Report:
    report = Report()
    check_source(header + body, "t.bicep", cache, report)
    return report


# line 1 is the declaration (check() puts the header before it): name is on line 2, mode on 8
CLEAN = """{
  name: 'thing-1'
  location: location
  tags: {
    owner: 'me'
  }
  properties: {
    mode: 'A'
    tier: 'Cool'
    count: 10
    enabled: true
    label: 'abc'
    items: [
      { key: 'k', size: 1 }
    ]
    target: {
      kind: 'Web'
      url: 'https://example.invalid'
      retries: 3
    }
  }
}
"""


def test_the_cache_keeps_only_what_the_resource_references(cache: dict[str, Any]) -> None:
    entry = cache["resources"]["Test.Ns/things@2024-01-01"]
    names = {t.get("name") for t in entry["types"]}
    assert "Unreferenced" not in names and "ThingProperties" in names
    assert len(entry["types"]) == 19  # TYPES[0:18] and 21: not the ResourceTypes nor the unreferenced 19, 20
    # renumbered: the body is first, and every reference points inside the kept list
    assert entry["types"][entry["body"]]["name"] == "Test.Ns/things"
    refs = [int(r) for r in re.findall(r'"\$ref": "#/(\d+)"', json.dumps(entry["types"]))]
    assert refs and max(refs) < len(entry["types"])


def test_the_cache_lists_the_versions_a_missing_type_has(cache: dict[str, Any]) -> None:
    assert cache["missing"] == {"Test.Ns/things@2022-01-01": ["2023-01-01", "2024-01-01"],
                                "Other.Ns/x@2024-01-01": []}


def test_a_template_that_fits_its_type_has_no_finding_and_is_counted(cache: dict[str, Any]) -> None:
    report = check(cache, CLEAN)
    assert report.findings == [] and report.notes == []
    assert report.resources == 1
    # name location tags owner properties mode tier count enabled label items key size target kind url retries
    assert report.properties == 17
    # 'thing-1' 'me' 'A' 'Cool' 10 true 'abc' 'k' 1 'Web' 'https...' 3
    assert report.literals == 12
    assert report.enum_literals == 3  # mode, tier, target.kind
    assert [u.split(": ")[1] for u in report.unchecked] == ["unchecked"]  # location: a parameter
    assert "Test.Ns/things@2024-01-01.location (an expression)" in report.unchecked[0]


def test_an_unknown_key_is_a_finding_at_its_line_with_a_suggestion(cache: dict[str, Any]) -> None:
    report = check(cache, CLEAN.replace("    enabled: true", "    Enabled: true\n    colour: 'red'"))
    assert report.findings == [
        "t.bicep:11: Test.Ns/things@2024-01-01.properties: Enabled is not a property of this type: "
        "did you mean enabled?",
        "t.bicep:12: Test.Ns/things@2024-01-01.properties: colour is not a property of this type",
    ]


def test_a_value_outside_a_closed_enum_is_a_finding(cache: dict[str, Any]) -> None:
    report = check(cache, CLEAN.replace("mode: 'A'", "mode: 'C'"))
    assert report.findings == ["t.bicep:8: Test.Ns/things@2024-01-01.properties.mode: 'C' is not allowed: "
                               "one of 'A', 'B'"]
    report = check(cache, CLEAN.replace("mode: 'A'", "mode: 'a'"))
    assert report.findings == ["t.bicep:8: Test.Ns/things@2024-01-01.properties.mode: 'a' is not allowed: "
                               "did you mean 'A'?"]


def test_a_value_outside_an_open_enum_is_a_note_not_a_finding(cache: dict[str, Any]) -> None:
    report = check(cache, CLEAN.replace("tier: 'Cool'", "tier: 'Archive'"))
    assert report.findings == []
    assert len(report.notes) == 1 and report.notes[0].startswith("t.bicep:9: note: ")
    assert "'Archive' is none of the documented values ('Hot', 'Cool')" in report.notes[0]


def test_writing_a_read_only_property_is_a_finding(cache: dict[str, Any]) -> None:
    report = check(cache, CLEAN.replace("    mode: 'A'", "    mode: 'A'\n    endpoint: 'x'"))
    assert report.findings == ["t.bicep:9: Test.Ns/things@2024-01-01.properties.endpoint is read-only: "
                               "it cannot be written"]


@pytest.mark.parametrize(("line", "message"), [
    ("count: 11", "properties.count: 11 is outside 1..10"),
    ("count: '5'", "properties.count: str value where the type wants an integer"),
    ("count: true", "properties.count: bool value where the type wants an integer"),
    ("label: 'ab'", "properties.label: 'ab' has 2 characters, outside 3..8"),
    ("label: 'ABC'", "properties.label: 'ABC' does not match the pattern ^[a-z]+$"),
    ("label: 3", "properties.label: int value where the type wants a string"),
    ("label: {}", "properties.label: object value where the type wants a string"),
])
def test_a_literal_of_the_wrong_kind_or_range_is_a_finding(cache: dict[str, Any], line: str, message: str) -> None:
    key = line.split(":")[0]
    original = next(x.strip() for x in CLEAN.splitlines() if x.strip().startswith(f"{key}:"))
    report = check(cache, CLEAN.replace(original, line))
    assert [f.split("things@2024-01-01.", 1)[1] for f in report.findings] == [message]


def test_items_of_an_array_and_of_a_for_loop_are_checked(cache: dict[str, Any]) -> None:
    report = check(cache, CLEAN.replace("{ key: 'k', size: 1 }", "{ key: 'k', size: 1 }\n      { key: 'k', sise: 1 }"))
    assert report.findings == ["t.bicep:15: Test.Ns/things@2024-01-01.properties.items[]: sise is not a property of "
                               "this type: did you mean size?"]
    loop = CLEAN.replace("items: [\n      { key: 'k', size: 1 }\n    ]",
                         "items: [for k in keys: {\n      key: k\n      size: 0\n    }]")
    report = check(cache, loop)
    assert report.findings == ["t.bicep:15: Test.Ns/things@2024-01-01.properties.items[].size: 0 is outside 1..10"]


def test_a_loop_or_condition_on_the_resource_checks_its_body(cache: dict[str, Any]) -> None:
    for header in ("resource t 'Test.Ns/things@2024-01-01' = [for x in xs: ",
                   "resource t 'Test.Ns/things@2024-01-01' = if (deploy) "):
        body = CLEAN.replace("mode: 'A'", "mode: 'C'")
        report = check(cache, body + ("]" if "for" in header else ""), header)
        assert report.resources == 1
        assert [f.split(": ", 1)[1] for f in report.findings] == [
            "Test.Ns/things@2024-01-01.properties.mode: 'C' is not allowed: one of 'A', 'B'"]


def test_a_discriminated_union_is_checked_against_the_chosen_variant(cache: dict[str, Any]) -> None:
    # a key of the other variant
    report = check(cache, CLEAN.replace("url: 'https://example.invalid'", "url: 'u'\n      queueName: 'q'"))
    assert [f.split(": ", 1)[1] for f in report.findings] == [
        "Test.Ns/things@2024-01-01.properties.target: queueName is not a property of this type"]
    # the variant's required property
    report = check(cache, CLEAN.replace("      url: 'https://example.invalid'\n", ""))
    assert [f.split(": ", 1)[1] for f in report.findings] == [
        "Test.Ns/things@2024-01-01.properties.target: the required property url is missing"]
    # no such variant
    report = check(cache, CLEAN.replace("kind: 'Web'", "kind: 'Mail'"))
    assert [f.split(": ", 1)[1] for f in report.findings] == [
        "Test.Ns/things@2024-01-01.properties.target.kind: 'Mail' is not allowed: one of 'Web', 'Queue'"]


def test_a_variant_chosen_by_an_expression_leaves_its_keys_unchecked(cache: dict[str, Any]) -> None:
    report = check(cache, CLEAN.replace("kind: 'Web'", "kind: targetKind"))
    assert report.findings == []
    assert any("properties.target.url (the variant is chosen by an expression)" in u for u in report.unchecked)


def test_expressions_and_built_keys_are_unchecked_never_findings(cache: dict[str, Any]) -> None:
    body = CLEAN.replace("mode: 'A'", "mode: modes[0]").replace("owner: 'me'", "'${prefix}-owner': 'me'")
    body = body.replace("count: 10", "count: max(1, n)").replace("label: 'abc'", "label: 'x${y}z'")
    report = check(cache, body)
    assert report.findings == [] and report.notes == []
    unchecked = "\n".join(report.unchecked)
    for path in ("properties.mode (an expression)", "tags.<built key> (a key built by interpolation)",
                 "properties.count (an expression)", "properties.label (an expression)"):
        assert path in unchecked


def test_both_branches_of_a_conditional_are_checked(cache: dict[str, Any]) -> None:
    report = check(cache, CLEAN.replace("mode: 'A'", "mode: fast ? 'B' : 'Z'"))
    assert [f.split(": ", 1)[1] for f in report.findings] == [
        "Test.Ns/things@2024-01-01.properties.mode: 'Z' is not allowed: one of 'A', 'B'"]


def test_a_pattern_python_cannot_read_leaves_the_literal_unchecked(cache: dict[str, Any]) -> None:
    report = check(cache, CLEAN.replace("    mode: 'A'", "    mode: 'A'\n    code: '1'"))
    assert report.findings == []
    assert any("properties.code (a pattern Python cannot read)" in u for u in report.unchecked)


def test_a_type_deployed_or_read_at_a_scope_it_lacks_is_a_finding(cache: dict[str, Any]) -> None:
    at_subscription = "targetScope = 'subscription'\nresource t 'Test.Ns/things@2024-01-01' = "
    report = check(cache, CLEAN, at_subscription)
    assert report.findings == ["t.bicep:2: Test.Ns/things@2024-01-01 cannot be deployed at subscription scope "
                               "(only: resourceGroup)"]
    # readable there: an existing one is fine
    report = check(cache, "{\n  name: 'n'\n}\n", at_subscription.replace("' = ", "' existing = "))
    assert report.findings == []
    # with scope: the template names it; not judged
    report = check(cache, CLEAN.replace("  name: 'thing-1'", "  scope: rg\n  name: 'thing-1'"), at_subscription)
    assert report.findings == []
    assert any("Test.Ns/things@2024-01-01 (its scope) (an expression)" in u for u in report.unchecked)


def test_a_type_that_can_only_be_read_must_be_existing(cache: dict[str, Any]) -> None:
    report = check(cache, "{\n  name: 'r'\n}\n", "resource r 'Test.Ns/reports@2024-01-01' = ")
    assert report.findings == ["t.bicep:1: Test.Ns/reports@2024-01-01 cannot be deployed, only read: "
                               "declare it existing"]
    report = check(cache, "{\n  name: 'r'\n}\n", "resource r 'Test.Ns/reports@2024-01-01' existing = ")
    assert report.findings == []


def test_a_missing_required_property_is_a_finding_except_on_an_existing_resource(cache: dict[str, Any]) -> None:
    report = check(cache, "{\n  name: 'n'\n}\n")
    assert report.findings == ["t.bicep:1: Test.Ns/things@2024-01-01: the required property location is missing"]
    report = check(cache, "{\n  name: 'n'\n}\n", "resource t 'Test.Ns/things@2024-01-01' existing = ")
    assert report.findings == [] and report.resources == 1


def test_an_api_version_the_types_do_not_have_is_a_finding(cache: dict[str, Any]) -> None:
    report = check(cache, "{\n  name: 'n'\n}\n", "// a comment\nresource t 'Test.Ns/things@2022-01-01' = ")
    assert report.findings == ["t.bicep:2: Test.Ns/things@2022-01-01: no such resource type and API version in "
                               "bicep-types-az (it has: 2023-01-01, 2024-01-01)"]
    report = check(cache, "{\n  name: 'n'\n}\n", "resource t 'Other.Ns/x@2024-01-01' = ")
    assert report.findings[0].endswith("(no version of that type)")


def test_a_type_the_cache_was_not_built_for_is_unchecked(cache: dict[str, Any]) -> None:
    report = check(cache, "{\n  name: 'n'\n}\n", "resource t 'Test.Ns/things@2021-01-01' = ")
    assert report.findings == [] and report.resources == 0 and report.resources_unchecked == 1
    assert "rerun python -m tools.bicep_types" in report.notes[0]


def test_the_reader_finds_declarations_among_the_rest_of_bicep() -> None:
    src = """targetScope = 'resourceGroup'
/* a block
   comment with resource x 'Not.Real/y@1' = { } */
@description('''multi
line''')
param p string = 'resource q \\'No.Such/t@1\\' = {}'
var v = {
  inner: [ 'a', 'b' ]
}
@batchSize(1)
resource a 'A.B/c@2020-01-01' existing = {
  name: '${p}-a' // resource b 'X.Y/z@1' = {}
}
module m 'm.bicep' = {
  name: 'm'
}
resource b 'A.B/c/d@2021-01-01' = [for (x, i) in filter(xs, e => e.ok ? true : false): {
  parent: a
  name: x
  properties: { k: 1, l: -2, m: null, n: 'a' }
}]
output o string = a.name
"""
    found = resources(src)
    assert [(r.symbol, r.type, r.api_version, r.existing, r.line) for r in found] == [
        ("a", "A.B/c", "2020-01-01", True, 11), ("b", "A.B/c/d", "2021-01-01", False, 17)]
    loop = found[1].body
    assert loop.kind == "loop"
    props = dict((k, v) for k, _, v in loop.items[0].entries)["properties"]
    assert [(k, v.kind, v.literal) for k, _, v in props.entries] == [
        ("k", "int", 1), ("l", "int", -2), ("m", "null", None), ("n", "str", "a")]


def test_a_child_resource_in_its_parents_body_is_checked_as_its_own_type(cache: dict[str, Any]) -> None:
    body = """{
  name: 'n'
  location: 'l'
  resource part 'parts' = {
    name: 'p'
    properties: { key: 'k', sise: 1 }
  }
}
"""
    found = resources("resource t 'Test.Ns/things@2024-01-01' = " + body)
    assert [(r.symbol, r.type, r.api_version) for r in found] == [
        ("t", "Test.Ns/things", "2024-01-01"), ("part", "Test.Ns/things/parts", "2024-01-01")]
    report = check(cache, body)
    assert report.resources == 2
    assert report.findings == ["t.bicep:6: Test.Ns/things/parts@2024-01-01.properties: sise is not a property of "
                               "this type: did you mean size?"]


def test_the_cache_reads_a_git_directory_as_it_reads_a_work_tree(checkout: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["cp", "-r", str(checkout), str(repo)], check=True)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "generated"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "types"], check=True)
    wanted = {"Test.Ns/things@2024-01-01", "Test.Ns/things@2022-01-01"}
    from_tree = bicep_types.build(bicep_types.Checkout(checkout), wanted)
    from_git = bicep_types.build(bicep_types.Checkout(repo / ".git"), wanted)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert from_git["commit"] == commit
    assert from_git["resources"] == from_tree["resources"] and from_git["missing"] == from_tree["missing"]
    assert from_git["resources"]["Test.Ns/things@2024-01-01"]["types"]


def test_main_fails_on_a_template_it_cannot_read(cache: dict[str, Any], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "types.json").write_text(json.dumps(cache))
    template = tmp_path / "t.bicep"
    template.write_text("resource t 'Test.Ns/things@2024-01-01' = {\n  name: 'n'\n  location\n}\n")
    assert bicep_check.main([str(template), "--cache", str(tmp_path)]) == 1
    assert f"{template}:3: this reader cannot parse it: expected key: value" in capsys.readouterr().out


def test_main_prints_findings_and_figures_and_fails_on_a_finding(
        cache: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "types.json").write_text(json.dumps(cache))
    good, bad = tmp_path / "good.bicep", tmp_path / "bad.bicep"
    good.write_text("resource t 'Test.Ns/things@2024-01-01' = " + CLEAN)
    bad.write_text("resource t 'Test.Ns/things@2024-01-01' = " + CLEAN.replace("mode: 'A'", "mode: 'C'"))
    assert bicep_check.main([str(good), "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 resources checked (0 unchecked), 17 property keys, 12 literals (3 of them enum values)" in out
    assert "0 findings" in out
    assert bicep_check.main([str(good), str(bad), "--cache", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:8: Test.Ns/things@2024-01-01.properties.mode: 'C' is not allowed" in out
    assert "2 resources checked" in out and "1 findings" in out


def test_main_without_a_cache_says_how_to_build_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bicep_check.main(["--cache", str(tmp_path / "none")]) == 2
    assert "python -m tools.bicep_types CHECKOUT" in capsys.readouterr().err


def test_main_reads_a_checkout_directly(checkout: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = tmp_path / "t.bicep"
    template.write_text("resource t 'Test.Ns/things@2022-01-01' = {\n  name: 'n'\n}\n")
    assert bicep_check.main([str(template), "--checkout", str(checkout)]) == 1
    assert "no such resource type and API version" in capsys.readouterr().out


# --- the real templates, against the real types (skipped without the cache) --------------

def real_cache() -> dict[str, Any]:
    try:
        return bicep_check.load_cache(bicep_check.CACHE)
    except FileNotFoundError:
        pytest.skip(f"no {bicep_check.CACHE.name}/ cache: build it with python -m tools.bicep_types "
                    "CHECKOUT (a checkout of Azure/bicep-types-az); CI has none")


def test_the_cache_holds_every_type_infra_declares() -> None:
    cache = real_cache()
    used = bicep_types.used_types(bicep_check.templates())
    stale = {u for u in used if u not in cache["resources"] and u not in cache["missing"]}
    assert not stale, f"rebuild the cache (python -m tools.bicep_types CHECKOUT): it lacks {sorted(stale)}"


def test_every_resource_in_infra_fits_azures_types() -> None:
    cache = real_cache()
    report = Report()
    declared = 0
    for path in bicep_check.templates():
        src = path.read_text()
        declared += len(resources(src))
        check_source(src, str(path.relative_to(bicep_check.ROOT)), cache, report)
    assert report.findings == []
    assert report.resources == declared and report.resources_unchecked == 0
    assert report.properties > 200 and report.literals > 50


@pytest.mark.parametrize(("template", "before", "after", "message"), [
    ("modules/storage.bicep", "allowSharedKeyAccess: false", "allowSharedKeysAccess: false",
     "properties: allowSharedKeysAccess is not a property of this type: did you mean allowSharedKeyAccess?"),
    ("modules/storage.bicep", "publicAccess: 'None'", "publicAccess: 'Private'",
     "properties.publicAccess: 'Private' is not allowed: one of 'Container', 'Blob', 'None'"),
    ("modules/eventgrid.bicep", "endpointType: 'WebHook'", "endpointType: 'Webhook'",
     "properties.destination.endpointType: 'Webhook' is not allowed"),
    ("modules/functionapp.bicep", "httpsOnly: true", "httpsOnly: 'true'",
     "properties.httpsOnly: str value where the type wants a bool"),
])
def test_a_mistake_in_a_real_template_is_found(template: str, before: str, after: str, message: str) -> None:
    cache = real_cache()
    src = (bicep_check.INFRA / template).read_text()
    assert before in src
    report = Report()
    check_source(src.replace(before, after), template, cache, report)
    assert len(report.findings) == 1 and message in report.findings[0]
