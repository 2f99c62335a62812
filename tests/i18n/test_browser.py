"""A patient whose browser is set to Chinese signs in and reads their home page in Chinese."""

from __future__ import annotations

import pytest

from app import db

pytestmark = pytest.mark.browser


def test_a_chinese_browser_signs_in_and_reads_my_health_in_chinese(live_server, live_factories, new_browser,
                                                                   browser_login):
    patient = live_factories.patient(with_account=True, given_name="Xiaoming", family_name="Wang")
    db.session.commit()
    context = new_browser(locale="zh-CN")
    page = context.new_page()
    page.goto(f"{live_server}/sign-in")
    assert page.locator("html").get_attribute("lang") == "zh-Hans"
    assert page.locator("h1").inner_text() == "登录"
    assert page.get_by_role("button", name="登录").is_visible()
    browser_login(page, live_server, patient.user)
    page.wait_for_url(f"{live_server}/me")
    assert page.locator("h1").first.inner_text() == "我的健康"
    assert page.get_by_role("link", name="我的处方").is_visible()
    assert page.get_by_role("button", name="English").is_visible()  # the switcher offers the other language
    page.get_by_role("button", name="English").click()
    page.wait_for_function("document.documentElement.lang === 'en'")
    assert page.locator("h1").first.inner_text() == "My health"
