def test_text_and_times_outside_a_request_default_to_english_and_utc(app):
    """A CLI job or a worker formats text without a browser: no crash, English and UTC unless forced."""
    from datetime import UTC, datetime

    from flask_babel import force_locale, format_datetime, get_locale, get_timezone

    with app.app_context():
        assert str(get_locale()) == "en"
        assert str(get_timezone()) == "UTC"
        assert format_datetime(datetime(2030, 1, 1, 12, tzinfo=UTC), "HH:mm") == "12:00"
        with force_locale("zh_Hans"):
            assert str(get_locale()) == "zh_Hans"
