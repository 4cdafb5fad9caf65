"""The one plain-text table of the CLI and the results (hand-written expected text)."""

from slowfast_zoo.tasks.tables import text_table


def test_columns_are_padded_to_the_widest_cell_with_a_rule_under_the_header():
    got = text_table(["name", "n"], [["slow", 12], ["slowfast_r50", 3]])
    assert got == "name          n\n------------  --\nslow          12\nslowfast_r50  3"


def test_the_last_column_can_be_right_aligned():
    got = text_table(["label", "score"], [["a", "0.5"], ["bb", "0.25"]], right_align_last=True)
    assert got == "label  score\n-----  -----\na        0.5\nbb      0.25"
