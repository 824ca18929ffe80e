"""ImageNet class names and --class_names files."""

import json

import pytest

from transforms import labels


def test_imagenet_names_are_unique_short_and_conventional():
    names = labels.imagenet_class_names()
    assert len(names) == 1000
    assert len({n.lower() for n in names}) == 1000  # GROUP BY label_name never merges classes
    assert max(len(n) for n in names) <= labels.MAX_NAME_LENGTH
    assert not [n for n in names if n.lower().startswith(("a ", "an ", "the "))]
    assert names[281] == "tabby cat" and names[282] == "tiger cat"
    assert (names[657], names[744]) == ("missile", "projectile")
    assert (names[836], names[837]) == ("sunglass", "sunglasses")
    assert names[285] == "Egyptian Mau" and names[967] == "espresso"


@pytest.mark.parametrize(
    "text",
    [
        "cat\ndog\nbird\n",
        '["cat", "dog", "bird"]',
        '{"2": "bird", "0": "cat", "1": "dog"}',
        # JSON after a blank line or an indent is JSON, not one name per line; and its
        # names are stripped of spaces as lines are.
        '\n  ["cat", "dog", "bird"]\n',
        '  {"0": " cat", "1": "dog ", "2": "bird"}',
    ],
)
def test_class_names_file_formats(tmp_path, text):
    path = tmp_path / "names.txt"
    path.write_text(text)
    assert labels.read_class_names(str(path)) == ("cat", "dog", "bird")


@pytest.mark.parametrize(
    "text, message",
    [
        ("cat\n\ndog\n", "class 1 has an empty name; name every class .a blank line counts"),
        # A blank first line is class 0, not dropped: dropping it would shift every class.
        ("\ncat\ndog\n", "class 0 has an empty name; name every class"),
        ("", "holds no names; give one name per line, or a JSON list"),
        ("cat\ndog\ncat\n", "classes 0 and 2 are both named 'cat'"),
        ('{"0": "cat", "2": "dog"}', "key '2' is out of range; use keys 0 to 1, each once"),
        ('{"-1": "cat", "0": "dog"}', "key '-1' is out of range; use keys 0 to 1"),
        ('{"0": "cat", "00": "dog"}', "key '00' repeats an index; use keys 0 to 1"),
        ('{"a": "cat"}', "key 'a' is not a class index; use keys 0 to 0"),
        ('["cat", 3]', "JSON must be a list of names"),
        ('["cat", " "]', "class 1 has an empty name"),  # stripped, as a blank line is
        ('["cat", "cat "]', "classes 0 and 1 are both named 'cat'"),
        ('["cat",', "is not valid JSON"),
    ],
)
def test_bad_class_names_files_say_why(tmp_path, text, message):
    path = tmp_path / "names.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        labels.read_class_names(str(path))
    with pytest.raises(
        ValueError,
        match=r"cannot be read \(.*missing.txt.*\); pass a readable file of the model.s class names",
    ):
        labels.read_class_names(str(tmp_path / "missing.txt"))


def test_a_gs_file_the_credentials_may_not_read_says_the_fix(gcs_stub):
    # Its reason was Google's "403 GET http://...: ...", and the fix "pass a readable file".
    gcs_stub.objects["names.txt"] = b"cat\ndog\n"
    gcs_stub.forbidden.add("names.txt")
    with pytest.raises(ValueError) as caught:
        labels.read_class_names("gs://bucket/names.txt")
    said = str(caught.value)
    assert said.startswith(
        "--class_names 'gs://bucket/names.txt' cannot be read ([Errno 13] Permission denied "
        "(stub@stub.iam.gserviceaccount.com does not have storage.objects.get access"
    ), said
    assert said.endswith(
        "'gs://bucket/names.txt'); the Google Cloud credentials in use need read access to it "
        "(roles/storage.objectViewer on its bucket; `gcloud auth application-default login` or "
        "GOOGLE_APPLICATION_CREDENTIALS for others), or pass another file of the model's class "
        "names, one per line or a JSON list."
    ), said
    assert "http://" not in said


def test_json_names_keep_unicode(tmp_path):
    path = tmp_path / "names.json"
    path.write_text(json.dumps(["café", "naïve"]), encoding="utf-8")
    assert labels.read_class_names(str(path)) == ("café", "naïve")


@pytest.mark.parametrize(
    "data",
    [
        b"cat\ndog\nbird\n\n\n",  # blank lines an editor left at the end
        b"cat\r\ndog\r\nbird\r\n",  # Windows line ends
        b"\xef\xbb\xbfcat\ndog\nbird\n",  # a UTF-8 byte order mark (Notepad)
        b'\xef\xbb\xbf["cat", "dog", "bird"]',
    ],
)
def test_class_names_files_as_editors_save_them(tmp_path, data):
    path = tmp_path / "names.txt"
    path.write_bytes(data)
    assert labels.read_class_names(str(path)) == ("cat", "dog", "bird")


@pytest.mark.parametrize(
    "text, first, from_1",
    [
        ("0 red\n1 green\n2 blue\n", "0 red", ""),  # numbered from 0
        ("1: red\n2: green\n3: blue\n", "1: red", " (its 1 is class 0)"),  # from 1, a colon
        ("0\tred\n1\tgreen\n2\tblue\n", "0\tred", ""),  # tab-separated, as a spreadsheet saves
    ],
)
def test_lines_numbered_by_their_class_are_refused_naming_the_fix(tmp_path, text, first, from_1):
    # The JSON object offered is keyed from 0, as classes are: a file numbered from 1
    # copied into {index: name} as it is was refused next ('key "3" is out of range').
    path = tmp_path / "names.txt"
    path.write_text(text)
    with pytest.raises(ValueError) as caught:
        labels.read_class_names(str(path))
    keyed = '{"0": "red", "1": "green", ...}'
    assert str(caught.value) == (
        f"--class_names {str(path)!r}: every line begins with its class's number "
        f"(line 1: {first!r}), which would be read as part of the names; a line's class "
        f"is its place in the file, counted from 0{from_1}: drop the numbers, or give a "
        f"JSON object keyed from 0 ({keyed})."
    )
    keyed_file = tmp_path / "names.json"
    keyed_file.write_text(keyed.replace(", ...", ', "2": "blue"'))
    assert labels.read_class_names(str(keyed_file)) == ("red", "green", "blue")


def test_a_numbered_file_of_two_names_is_offered_both_as_json(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("1) café\n2) thé\n")
    with pytest.raises(ValueError) as caught:
        labels.read_class_names(str(path))
    assert str(caught.value).endswith(' ({"0": "café", "1": "thé"}).')


@pytest.mark.parametrize(
    "text",
    [
        "7up\ncola\nwater\n",  # one name begins with a number
        "1 red\n0 green\n2 blue\n",  # numbered, but not in order: names, as written
        "0\n1\n2\n",  # numbers alone are names (a model of digits)
        "3 kings\n4 seasons\n5 senses\n",  # numbered, but not from 0 or 1
    ],
)
def test_names_that_begin_with_numbers_are_read_as_written(tmp_path, text):
    path = tmp_path / "names.txt"
    path.write_text(text)
    assert labels.read_class_names(str(path)) == tuple(text.split("\n")[:3])
