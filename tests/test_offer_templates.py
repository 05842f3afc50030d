"""The offer template sandbox: what templates can do, what they are refused, and the limits."""

from __future__ import annotations

import time

import pytest

from cdp.decisions import templates
from cdp.decisions.templates import check_template, render_content, variables
from cdp.errors import UserError

PROFILE = {
    "id": "p-1",
    "traits": {
        "first_name": "Ada",
        "plan": "pro",
        "basket": ["tea", "<script>"],
        "address": {"city": "Paris"},
        "k": "__class__",
        "bio": "<b>bold</b> & co",
    },
    "computed_traits": {"orders_30d": 3},
    "scores": {"churn": 0.4271},
}
OFFER = {
    "id": "catalogue:welcome",
    "provider": "catalogue",
    "key": "welcome",
    "name": "Welcome",
    "value": 10.0,
    "cost": 1.5,
    "tags": ("new", "email"),
    "content": {"email": {"subject": "never shown to templates"}},
}
VARS = variables(OFFER, PROFILE)


def render(source: str, field: str = "subject") -> str:
    return render_content({field: source}, VARS)[field]


def refusal(source: str, field: str = "subject") -> str:
    with pytest.raises(UserError) as caught:
        render(source, field)
    return str(caught.value)


# --- what templates can do -----------------------------------------------------------------------


def test_renders_profile_and_offer_fields():
    assert render("Hi {{ profile.traits.first_name }}") == "Hi Ada"
    assert render("{{ offer.name }}: {{ offer.value }} off") == "Welcome: 10 off"
    assert render("{{ offer.cost }}") == "1.5"
    assert render("{{ profile.computed_traits.orders_30d + 1 }}") == "4"
    assert render("{{ profile.scores.churn | round(2) }}") == "0.43"
    assert render("{{ profile.traits['plan'] | upper }}") == "PRO"
    assert render("{{ offer.tags | join(', ') }}") == "new, email"
    assert render("{{ '%.2f' | format(offer.value) }}") == "10.00"
    assert render("{{ profile.traits.address.city }}") == "Paris"


def test_templates_do_not_see_the_offer_content_or_other_keys():
    assert "content" not in VARS["offer"]
    assert set(VARS["profile"]) == {"id", "traits", "computed_traits", "scores"}
    message = refusal("{{ offer.content }}")
    assert message == (
        "content.subject: 'content' is not set (give optional values a | default(…))"
    )


def test_loops_conditions_and_loop_variables():
    source = (
        "{% for item in profile.traits.basket %}{{ loop.index }}:{{ item }}"
        "{{ loop.cycle(',', ';') }}{% endfor %}"
        "{% if profile.traits.plan == 'pro' %} pro{% else %} free{% endif %}"
    )
    assert render(source) == "1:tea,2:<script>; pro"
    grouped = "{% for g in [{'a': 1}, {'a': 1}] | groupby('a') %}{{ g.grouper }}{% endfor %}"
    assert render(grouped) == "1"


def test_missing_values_are_falsy_and_default_but_never_printed_blank():
    assert render("{{ profile.traits.nickname | default('friend') }}") == "friend"
    nulls = {"profile": {"traits": {"nickname": None}}, "offer": {}}
    assert render_content({"t": "{{ profile.traits.nickname | default('you') }}"}, nulls) == {
        "t": "you"
    }  # null is "not set", never printed as "None"
    with pytest.raises(UserError) as caught:
        render_content({"t": "{{ profile.traits.nickname }}"}, nulls)
    assert "'nickname' is not set" in str(caught.value)
    assert render("{% if profile.traits.nickname %}x{% else %}y{% endif %}") == "y"
    assert render("{% if profile.traits.nope.deeper.still is defined %}x{% endif %}.") == "."
    assert render("{% for x in profile.traits.nope %}x{% endfor %}.") == "."
    message = refusal("Hi {{ profile.traits.nickname }}")
    assert message == "content.subject: 'nickname' is not set (give optional values a | default(…))"
    # Chained lookups of a missing value stay missing: still an error when printed.
    assert "'nope' is not set" in refusal("{{ profile.traits.nope.deeper }}")


def test_html_fields_escape_every_value_text_fields_do_not():
    assert render("<p>{{ profile.traits.bio }}</p>", "html") == (
        "<p>&lt;b&gt;bold&lt;/b&gt; &amp; co</p>"
    )
    assert render("{{ profile.traits.basket | join(' ') }}", "body_html") == "tea &lt;script&gt;"
    assert render("{{ 'x' ~ profile.traits.basket[1] }}", "banner_html") == "x&lt;script&gt;"
    assert render("{{ profile.traits.bio }}", "text") == "<b>bold</b> & co"
    assert render("{{ profile.traits.bio }}", "htmlish") == "<b>bold</b> & co"


def test_html_cannot_be_unescaped():
    assert refusal("{{ profile.traits.bio | safe }}", "html") == (
        "content.html: no filter named 'safe'"
    )
    message = refusal("{% autoescape false %}{{ profile.traits.bio }}{% endautoescape %}", "html")
    assert message.startswith("content.html: refused by the template sandbox: {% autoescape %}")


# --- what templates are refused ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ ''.__class__.__mro__ }}", "templates cannot read '__class__'"),
        ("{{ cycler.__init__.__globals__ }}", "templates cannot read '__init__'"),
        ("{{ profile.__class__ }}", "templates cannot read '__class__'"),
        ("{{ profile['__class__'] }}", "templates cannot read '__class__'"),
        ("{{ offer.name.upper() }}", "templates cannot call functions"),
        ("{{ profile.traits.items() }}", "templates cannot call functions"),
        ("{{ lipsum() }}", "unknown variable 'lipsum'"),
        ("{{ range(10) | list }}", "unknown variable 'range'"),
        ("{{ loop.cycle.__self__ }}", "templates cannot read '__self__'"),
        ("{{ self }}", "unknown variable 'self'"),
        ("{{ config }}", "unknown variable 'config'"),
        ("{% set x = 1 %}", "{% set %} is not available"),
        ("{% macro m() %}{% endmacro %}", "{% macro %} is not available"),
        ("{% include 'x.html' %}", "{% include %} is not available"),
        ("{% import 'x' as x %}", "{% import %} is not available"),
        ("{% extends 'x' %}", "{% extends %} is not available"),
        ("{% with a = 1 %}{% endwith %}", "{% with %} is not available"),
        ("{% for x in [1] recursive %}{% endfor %}", "recursive loops are not available"),
    ],
)
def test_unsafe_templates_are_refused_at_save_and_at_render(source, expected):
    with pytest.raises(UserError) as saved:
        check_template(source, "content.email.subject")
    assert str(saved.value).startswith(
        "content.email.subject: refused by the template sandbox: "
    ), saved.value
    assert expected in str(saved.value)
    assert expected in refusal(source)


def test_attribute_names_that_arrive_as_data_are_refused_at_render():
    # The template is harmless to look at; the attribute name comes from profile data.
    check_template("{{ offer.name[profile.traits.k] }}", "content.email.subject")
    assert refusal("{{ offer.name[profile.traits.k] }}") == (
        "content.subject: refused by the template sandbox: templates cannot read '__class__'"
    )
    assert "templates cannot read '__class__'" in refusal("{{ ''[profile.traits.k] }}")
    # Methods are attributes too: a template reads keys of mappings, nothing else.
    check_template("{{ offer.name.upper }}", "content.email.subject")
    assert refusal("{{ offer.name.upper }}").startswith(
        "content.subject: refused by the template sandbox: templates cannot read 'upper' of a "
        "string"
    )


def test_the_sandbox_refuses_attributes_of_objects_it_is_given():
    class Secret:
        token = "s3cr3t"

    with pytest.raises(UserError) as caught:
        render_content({"t": "{{ offer.x.token }}"}, {"offer": {"x": Secret()}, "profile": {}})
    assert "templates cannot read 'token' of a Secret" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_unsafe_filters_are_not_available():
    for name in ("attr", "safe", "center", "indent", "wordwrap", "batch", "slice", "pprint"):
        with pytest.raises(UserError) as caught:
            check_template(f"{{{{ offer.name | {name}(1) }}}}", "content.email.subject")
        assert str(caught.value) == f"content.email.subject: no filter named '{name}'"


def test_syntax_errors_name_the_path():
    with pytest.raises(UserError) as caught:
        check_template("Hi {{ profile.traits.first_name }", "content.email.subject")
    assert str(caught.value) == "content.email.subject: unexpected '}'"
    with pytest.raises(UserError) as caught:
        check_template("line one\n{% if %}\n", "content.email.text")
    assert str(caught.value).startswith("content.email.text: ")
    assert str(caught.value).endswith("(line 2)")
    with pytest.raises(UserError) as caught:
        check_template(42, "content.sms.text")
    assert str(caught.value) == "content.sms.text: expected a template (a string)"


def test_runtime_type_errors_are_user_errors():
    assert refusal("{{ 1 / 0 }}") == "content.subject: ZeroDivisionError: division by zero"
    assert refusal("{{ profile.traits.first_name + 1 }}").startswith("content.subject: TypeError")


# --- limits --------------------------------------------------------------------------------------


def test_template_size_is_limited():
    source = "x" * (templates.MAX_TEMPLATE + 1)
    with pytest.raises(UserError) as caught:
        check_template(source, "content.email.html")
    assert "a template is at most" in str(caught.value)
    check_template("x" * templates.MAX_TEMPLATE, "content.email.html")


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 1000000000 }}",
        "{{ [1] * 1000000000 }}",
        "{{ 2 ** 100000 }}",
        "{{ '%1000000000s' | format('a') }}",
        "{{ '%1000000000s' % 'a' }}",
        "{{ '%*s' % (1000000000, 'a') }}",
        "{{ 'aaaa'" + " | replace('a', 'aaaaaaaaaa')" * 8 + " }}",
        "{{ ['x'] | join('y' * 150000) ~ profile.traits.first_name * 100000 }}",
        "{% for a in profile.traits.basket %}{% for b in [1,2,3,4,5,6,7,8,9,10] %}"
        "{% for c in [1,2,3,4,5,6,7,8,9,10] %}{% for d in [1,2,3,4,5,6,7,8,9,10] %}"
        "{% for e in [1,2,3,4,5,6,7,8,9,10] %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}"
        "{% endfor %}",
        "{% for a in profile.traits.basket %}{% for b in [1,2,3,4,5,6,7,8,9,10] %}"
        "{{ 'x' * 20000 }}{% endfor %}{% endfor %}",
    ],
)
def test_bombs_are_refused_quickly(source):
    start = time.perf_counter()
    message = refusal(source)
    assert time.perf_counter() - start < 2
    assert "too large" in message or "not allowed" in message or "'*' widths" in message, message


def test_output_size_is_limited():
    big = "x" * (templates.MAX_OUTPUT // 2 + 1)
    many = {"offer": {}, "profile": {"traits": {"big": big}}}
    assert render_content({"t": "{{ profile.traits.big }}"}, many)["t"] == big
    with pytest.raises(UserError) as caught:
        render_content({"t": "{{ profile.traits.big }}{{ profile.traits.big }}"}, many)
    assert "the rendered text is over" in str(caught.value)


def test_render_errors_name_the_field_and_path():
    with pytest.raises(UserError) as caught:
        render_content(
            {"subject": "ok", "text": "{{ profile.traits.nope }}"}, VARS, "content.email"
        )
    assert str(caught.value).startswith("content.email.text: 'nope' is not set")


def test_compiled_templates_are_cached():
    templates._compile.cache_clear()
    render("{{ profile.traits.first_name }}")
    render("{{ profile.traits.first_name }}")
    info = templates._compile.cache_info()
    assert (info.hits, info.misses) == (1, 1)
