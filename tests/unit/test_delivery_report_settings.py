"""A worker refuses to start when delivery reports could be forged or could not arrive
(pipeline/bootstrap.py check_delivery_reports): no default secret, and a report URL the gateway reaches."""

import pytest

from pipeline.bootstrap import check_delivery_reports
from pipeline.config import Settings

pytestmark = pytest.mark.unit

SECRET = "0123456789abcdef0123"
REMOTE_KANNEL = "http://kannel.city.example:13013/cgi-bin/sendsms"


def refusal(**settings) -> str:
    with pytest.raises(SystemExit) as refused:
        check_delivery_reports(Settings(**settings))
    return str(refused.value)


@pytest.mark.parametrize("secret", [None, "", "short"])
def test_kannel_without_a_report_secret_is_refused_naming_the_variable_to_set(secret):
    says = refusal(sms_gateway="kannel", sms_report_secret=secret)

    assert "PW_SMS_REPORT_SECRET" in says and "secrets.token_urlsafe" in says


@pytest.mark.parametrize("token", [None, "change-me"])
def test_an_http_provider_without_a_report_token_is_refused_naming_the_variable_to_set(token):
    says = refusal(sms_gateway="http", sms_http_url="https://sms.example/send", sms_http_token="t",
                   sms_report_token=token)

    assert "PW_SMS_REPORT_TOKEN" in says


def test_a_loopback_report_url_with_a_kannel_on_another_machine_is_refused():
    says = refusal(sms_gateway="kannel", sms_report_secret=SECRET, kannel_sendsms_url=REMOTE_KANNEL)

    assert "http://127.0.0.1:6066" in says and "kannel.city.example" in says and "PW_SMS_REPORT_BASE_URL" in says
    assert "PW_SMS_REPORT_BASE_URL" in refusal(sms_gateway="http", sms_http_url="https://sms.example/send",
                                               sms_http_token="t", sms_report_token=SECRET,
                                               sms_report_base_url="http://localhost:6066")


def test_a_report_url_on_every_address_is_refused():
    assert "PW_SMS_REPORT_BASE_URL" in refusal(sms_gateway="kannel", sms_report_secret=SECRET, web_host="0.0.0.0")


@pytest.mark.parametrize("settings", [
    {"sms_gateway": "kannel", "sms_report_secret": SECRET},  # both on this machine
    {"sms_gateway": "kannel", "sms_report_secret": SECRET, "kannel_sendsms_url": REMOTE_KANNEL,
     "sms_report_base_url": "http://workers.city.example"},
    {"sms_gateway": "kannel", "sms_report_secret": SECRET, "web_host": "::1",
     "kannel_sendsms_url": "http://[::1]:13013/cgi-bin/sendsms"},
    {"sms_gateway": "http", "sms_http_url": "https://sms.example/send", "sms_http_token": "t",
     "sms_report_token": SECRET, "sms_report_base_url": "https://workers.city.example"},
    {"sms_gateway": "file"},  # reports nothing: needs no secret
])
def test_settings_that_keep_reports_genuine_and_reachable_start(settings):
    check_delivery_reports(Settings(**settings))
