"""The driver page's words for every state a case can be in (pipeline/sms/driver_status.py), its
templates (autoescaped, a labelled code field, the code never in a query string) and its car parks'
navigation links (GCJ-02 for AMap)."""

import math
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import prcoords
import pytest
from geopy.distance import geodesic

from pipeline.sms import driver_page
from pipeline.sms.driver_page import TEMPLATES, amap_navigation
from pipeline.sms.driver_status import Afterwards, AppealFacts, TicketFacts, say

pytestmark = pytest.mark.unit

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 26, 2, 50, tzinfo=UTC)  # 10:50 in Hangzhou
DEADLINE = NOW + timedelta(minutes=2)  # 10:52
AFTER = Afterwards(timedelta(days=15))
ISSUED = NOW - timedelta(hours=1)
TICKET = TicketFacts("YH261126000001", ISSUED)
APPEAL = AppealFacts("SSYH261126000001", NOW - timedelta(minutes=30), NOW + timedelta(days=10))


def words(said) -> str:
    return " ".join([*said.headline, *(w for line in said.lines for w in line)])


# Every state, one by one: (state, extra arguments, the key, words the driver must read, words that must not be there)
STATES = [
    ("detected", {}, "detected", ["正在通知", "Notifying"], []),
    ("warned", {}, "warned", ["请于10:52前驶离", "10:52后仍在原处，将开具违停告知单", "Still here after 10:52"], []),
    ("rechecking", {}, "checking", ["驶离期限已过", "正在核查", "Still there: a ticket is issued"], []),
    ("moved", {}, "moved", ["已驶离，无需处理"], ["告知单"]),
    ("to_confirm", {}, "to_confirm", ["待执法人员确认"], []),
    ("rejected", {}, "rejected", ["未确认告知单，无需处理"], []),
    ("cautioned", {"caution": "first_offence"}, "cautioned", ["首次违停", "不罚款", "no fine"], []),
    ("cautioned", {"caution": "new_camera:7"}, "cautioned", ["试运行", "不罚款"], ["首次"]),
    ("unconfirmed", {}, "unconfirmed", ["不予处罚", "no ticket"], []),
    ("review", {}, "review", ["人工审核中", "不会自动开单"], []),
    ("exempt", {}, "exempt", ["豁免"], []),
    ("cancelled", {}, "cancelled", ["案件已撤销，无需处理"], []),
    ("ticketed", {"ticket": TICKET}, "ticketed",
     ["已开具告知单YH261126000001", "2026-12-11 09:50前在本页申诉", "交管12123"], ["撤销"]),
    ("ticketed", {"ticket": TicketFacts("YH261126000001", ISSUED, NOW, "持有残疾人停车证")}, "voided",
     ["告知单YH261126000001已撤销，无需处理", "持有残疾人停车证"], ["申诉期", "appeal window", "Ticket issued", "2026-12"]),
    ("ticketed", {"ticket": TICKET, "appeal": APPEAL}, "under_appeal",
     ["申诉处理中", "SSYH261126000001", "2026-12-06 10:50前答复", "答复前无需缴款"], []),
    ("ticketed", {"ticket": TICKET, "appeal": AppealFacts("SSYH261126000001", NOW, NOW, NOW, "upheld", "抓拍清晰")},
     "appeal_upheld", ["申诉未获支持", "抓拍清晰", "60日内申请行政复议", "6个月内提起行政诉讼", "交管12123"], ["撤销"]),
    ("ticketed", {"ticket": TicketFacts("YH261126000001", ISSUED, NOW, "appeal allowed: 基站故障"),
                  "appeal": AppealFacts("SSYH261126000001", NOW, NOW, NOW, "voided", "基站故障")},
     "appeal_voided", ["申诉成立", "已撤销", "无需缴款"], ["申诉期", "行政复议"]),
]


@pytest.mark.parametrize("state, extra, key, expected, absent", STATES,
                         ids=[f"{s[0]}-{s[2]}-{i}" for i, s in enumerate(STATES)])
def test_every_state_has_its_own_words_on_the_driver_page(state, extra, key, expected, absent):
    said = say(state, DEADLINE, NOW, TZ, AFTER, **extra)

    assert said.key == key
    for w in expected:
        assert w in words(said), (w, words(said))
    for w in absent:
        assert w not in words(said), (w, words(said))
    page = render_case(said)
    for w in expected:
        assert w in page, w


def test_a_warned_case_counts_down_to_its_deadline_and_after_it_says_it_is_being_checked():
    before = say("warned", DEADLINE, NOW, TZ, AFTER)
    after = say("warned", DEADLINE, DEADLINE, TZ, AFTER)

    assert before.countdown_to == DEADLINE and after.countdown_to is None
    assert after.key == "checking" and before.version != after.version, "an open page reloads at the deadline"


def test_a_void_changes_what_the_page_says_so_an_open_page_reloads():
    standing = say("ticketed", DEADLINE, NOW, TZ, AFTER, ticket=TICKET)
    void = say("ticketed", DEADLINE, NOW, TZ, AFTER, ticket=TicketFacts(TICKET.number, ISSUED, NOW, "permit"))

    assert standing.version != void.version and standing.can_appeal and not void.can_appeal


def test_once_the_appeal_window_has_closed_the_page_says_when_and_offers_no_form():
    late = ISSUED + timedelta(days=15, seconds=1)
    said = say("ticketed", DEADLINE, late, TZ, AFTER, ticket=TICKET)

    assert said.key == "appeal_closed" and not said.can_appeal
    assert "申诉期已于2026-12-11 09:50结束" in words(said)


def render_case(said, place="文一西路海创园南门", parks=()) -> str:
    return TEMPLATES.get_template("driver_case.html").render(
        authority="杭州城管", code="K7F2QK7F2Q", plate="浙A***45", place=place, said=said, now=NOW,
        now_local="10:50:00", left="2:00", show_parks=said.key in driver_page.PARK_STATES, parks=parks, phone="12345",
        local=lambda v: str(v), notice=None, error=None)


def test_the_countdown_carries_the_deadline_and_the_servers_clock_and_the_page_polls_its_state():
    page = render_case(say("warned", DEADLINE, NOW, TZ, AFTER))

    deadline = int(re.search(r'data-deadline="(\d+)"', page).group(1))
    now = int(re.search(r'data-now="(\d+)"', page).group(1))
    assert deadline - now == 120_000, "two minutes left, from the server's clock"
    assert 'data-state-url="/d/K7F2QK7F2Q/state.json"' in page and "/d/static/driver.js" in page


def test_the_page_escapes_what_it_shows():
    page = render_case(say("moved", None, NOW, TZ, AFTER), place='<script>alert("x")</script>')

    assert "<script>alert" not in page and "&lt;script&gt;" in page


def test_the_code_field_has_a_label_and_the_code_goes_in_a_post_body_never_a_query_string():
    form = TEMPLATES.get_template("driver_form.html").render(authority="杭州城管")

    assert re.search(r'<label for="code">', form) and 'id="code"' in form
    assert re.search(r'<form method="post" action="/d"', form)
    assert "?code=" not in form and 'method="get"' not in form


# ── car parks ────────────────────────────────────────────────────────────────────────────────

def test_the_navigation_link_opens_amap_walking_to_the_car_park_in_gcj02():
    lat, lon = 30.27875, 120.0052  # 海创园B1 in the demo registry (WGS-84)

    link = amap_navigation(lat, lon, "海创园地下停车场B1")

    parts = urlsplit(link)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "uri.amap.com", "/navigation")
    query = parse_qs(parts.query)
    to_lon, to_lat, name = query["to"][0].split(",")
    assert name == "海创园地下停车场B1" and query["mode"] == ["walk"] and query["coordinate"] == ["gaode"]
    shifted = geodesic((lat, lon), (float(to_lat), float(to_lon))).meters
    assert 200 < shifted < 800, f"GCJ-02 is WGS-84 moved by a few hundred metres in China, not {shifted:.0f} m"
    back = prcoords.gcj_wgs(prcoords.Coords(float(to_lat), float(to_lon)))
    assert math.isclose(back.lat, lat, abs_tol=2e-5) and math.isclose(back.lon, lon, abs_tol=2e-5)


def test_a_car_park_shows_its_address_walking_time_and_a_tel_link():
    from pipeline.lookups.carparks import CarPark, NearestCarPark

    park = CarPark("cp-1", "海创园地下停车场B1", "海创园B1", 30.27875, 120.0052, 420, "余杭区文一西路1818号",
                   "0571-8800 0001")
    view = driver_page.park_view(NearestCarPark(park, 600.0, 37, NOW), TZ)
    page = render_case(say("warned", DEADLINE, NOW, TZ, AFTER), parks=[view])

    assert view.walk_minutes == 11, "600 m straight, about 780 m on foot at 75 m a minute"
    assert "余杭区文一西路1818号" in page and 'href="tel:057188000001"' in page
    assert "uri.amap.com/navigation" in page and "步行约11分钟" in page and "37 空位" in page
