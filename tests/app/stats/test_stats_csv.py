"""The votes CSV reader refuses malformed files naming row, line and column; exports are whole or absent."""
from __future__ import annotations

import os

import pytest

from app.stats import compute_all, read_votes_csv, write_stats_json, write_votes_csv
from app.stats.export import TIDY_COLUMNS, write_atomic
from app.stats.synthetic import synthetic_study
from app.stats.votes import Vote, VoteFormatError, parse_votes_csv, votes_from_rows

GOOD = "pair_id,rater_id,choice\np1,r1,robust\np1,r2,vanilla\np2,r1,same\n"


def refused(text: str, **kw) -> VoteFormatError:
    with pytest.raises(VoteFormatError) as info:
        parse_votes_csv(text, **kw)
    return info.value


def test_minimal_file_reads():
    votes = parse_votes_csv(GOOD)
    assert [(v.pair_id, v.rater_id, v.choice) for v in votes] == [("p1", "r1", "robust"), ("p1", "r2", "vanilla"),
                                                                 ("p2", "r1", "same")]
    assert votes[0].robust_side is None and votes[0].excluded is False


def test_all_columns_parse_into_typed_fields():
    text = ("study_id,pair_id,label,class_name,seed,rater_id,choice,robust_side,position,response_ms,created_at,"
            "is_attention_check,excluded,comment\n"
            "s1,p1,207,golden retriever,12.0,r1,Robust,LEFT,3,1234.5,2024-05-01T10:00:00Z,no,0,anything\n")
    (v,) = parse_votes_csv("\ufeff" + text)  # a spreadsheet's byte-order mark is fine
    assert v == Vote(pair_id="p1", rater_id="r1", choice="robust", study_id="s1", label=207,
                     class_name="golden retriever", seed=12, robust_side="left", position=3, response_ms=1234.5,
                     created_at="2024-05-01T10:00:00Z", is_attention_check=False, excluded=False)


def test_missing_column_is_named():
    err = refused("pair_id,choice\np1,robust\n")
    assert err.column == "rater_id" and "rater_id" in str(err) and "line 1" in str(err)


def test_unknown_choice_names_row_line_and_column():
    err = refused(GOOD + "p2,r2,robsut\n")
    assert (err.row, err.line, err.column) == (4, 5, "choice")
    assert "row 4 (line 5)" in str(err) and "'robsut'" in str(err) and "robust, vanilla, same" in str(err)


def test_duplicate_rater_pair_names_both_rows():
    err = refused(GOOD + "p3,r9,robust\np1,r2,robust\n")
    assert err.row == 5 and "row 5" in str(err) and "row 2" in str(err) and "'r2'" in str(err)


def test_empty_file_and_header_only_are_refused():
    assert "empty" in str(refused(""))
    assert "empty" in str(refused("\n\n"))
    assert "no votes" in str(refused("pair_id,rater_id,choice\n"))


@pytest.mark.parametrize("column,bad,expected", [
    ("seed", "12x", "not an integer"),
    ("label", "3.5", "not an integer"),
    ("position", "first", "not an integer"),
    ("response_ms", "-4", "milliseconds"),
    ("response_ms", "nan", "milliseconds"),
    ("robust_side", "middle", "'left', 'right'"),
    ("excluded", "maybe", "true/false"),
    ("is_attention_check", "2", "true/false"),
])
def test_bad_values_in_optional_columns(column, bad, expected):
    text = f"pair_id,rater_id,choice,{column}\np1,r1,robust,\np1,r2,same,{bad}\n"
    err = refused(text)
    assert (err.row, err.line, err.column) == (2, 3, column)
    assert expected in str(err) and repr(bad) in str(err)


def test_row_numbers_follow_records_not_lines():
    # Row 1 has a quoted class name over two lines; the blank line is skipped. Row 2 starts on line 5.
    text = 'pair_id,rater_id,choice,class_name\np1,r1,robust,"tabby,\ncat"\n\np1,r2,nope,x\n'
    err = refused(text)
    assert (err.row, err.line) == (2, 5)


def test_wrong_number_of_fields_empty_ids_and_inconsistent_pairs():
    err = refused("pair_id,rater_id,choice\np1,r1,robust\np1,r2\n")
    assert err.row == 2 and "2 fields but the header has 3" in str(err)
    assert refused("pair_id,rater_id,choice\np1,,robust\n").column == "rater_id"
    err = refused("pair_id,rater_id,choice,label\np1,r1,robust,4\np1,r2,same,5\n")
    assert err.column == "label" and "row 1" in str(err)
    err = refused("study_id,pair_id,rater_id,choice\ns1,p1,r1,robust\ns2,p2,r1,same\n")
    assert err.column == "study_id" and err.row == 2


def test_custom_method_names_and_reserved_names():
    votes = parse_votes_csv("pair_id,rater_id,choice\np1,r1,cfg\np1,r2,plain\n", method_a="cfg", method_b="plain")
    assert [v.choice for v in votes] == ["cfg", "plain"]
    with pytest.raises(ValueError, match="reserved"):
        parse_votes_csv(GOOD, method_a="same", method_b="x")


def test_dict_rows_get_the_same_checks_and_keep_integer_ids():
    votes = votes_from_rows([{"pair_id": 12, "rater_id": 3, "choice": "robust", "response_ms": 800}])
    assert votes[0].pair_id == 12 and votes[0].rater_id == 3 and votes[0].response_ms == 800.0
    with pytest.raises(VoteFormatError, match="row 2"):
        votes_from_rows([{"pair_id": 1, "rater_id": 1, "choice": "robust"},
                         {"pair_id": 1, "rater_id": 1, "choice": "same"}])


def test_non_utf8_file_is_refused(tmp_path):
    path = tmp_path / "votes.csv"
    path.write_bytes(b"pair_id,rater_id,choice\np1,r1,robust\np1,r\xe9,same\n")
    with pytest.raises(VoteFormatError, match="line 3"):
        read_votes_csv(path)


def test_tidy_export_has_the_columns_and_reads_back_to_the_same_statistics(tmp_path):
    votes = synthetic_study(n_pairs=20, raters_min=3, raters_max=6, mean_raters=4.5, n_raters=15,
                            attention_pairs=2, careless_raters=2, seed=1)
    path = write_votes_csv(tmp_path / "tidy.csv", votes)
    header = path.read_text().splitlines()[0].split(",")
    assert tuple(header) == TIDY_COLUMNS
    assert header[:12] == ["study", "pair", "label", "class_name", "seed", "rater", "choice", "side_shown",
                           "position", "response_time_ms", "timestamp", "excluded"]
    again = read_votes_csv(path)
    assert len(again) == len(votes)
    before, after = compute_all(votes, n_boot=200), compute_all(again, n_boot=200)
    for key in ("n_pairs", "n_raters", "n_answers", "answer_counts", "thresholds", "agreement", "position_bias",
                "response_time", "pairs"):
        assert after[key] == before[key], key
    assert after["exclusions"]["n_votes_used"] == before["exclusions"]["n_votes_used"]


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "stats.json"
    target.write_text("previous")
    with pytest.raises(ValueError):
        write_stats_json(target, {"bad": float("nan")})
    assert target.read_text() == "previous"
    assert os.listdir(tmp_path) == ["stats.json"]  # no temporary file left behind

    with pytest.raises(TypeError):
        write_atomic(tmp_path / "new.txt", 123)  # type: ignore[arg-type]
    assert sorted(os.listdir(tmp_path)) == ["stats.json"]


def test_a_huge_line_is_refused_without_reading_it_whole(tmp_path):
    import tracemalloc

    from app.stats.votes import MAX_LINE_CHARS, VoteFormatError, read_votes_csv

    path = tmp_path / "huge.csv"
    with open(path, "w") as fh:
        fh.write("pair_id,rater_id,choice\n")
        fh.write("p1," + "x" * (50 * 1024 * 1024) + ",same\n")  # one 50 MB line
    tracemalloc.start()
    try:
        with pytest.raises(VoteFormatError, match=f"line 2 is longer than {MAX_LINE_CHARS} characters"):
            read_votes_csv(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 * 1024 * 1024, peak  # well under the line's size, let alone seven times it
