"""The media service: a separate asyncio process (aiohttp + aiortc) for the echo test, relays and recording.

The web app never creates peer connections; it authorises users and forwards SDP here over a small internal
HTTP API authenticated by a secret shared with the app.
"""
