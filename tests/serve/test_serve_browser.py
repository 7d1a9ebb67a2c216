"""The page in a real browser: headless Debian chromium driven by Playwright uploads a photo
and a short real clip to a real `vidrestore serve`, waits for both jobs, checks the
before/after slider, the two videos playing in sync, the identity plot and the download,
and saves a screenshot (`page.png` in the test's folder; the README's is one of these)."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.serving import ServerProcess, real_clip, tiny_photo

pytest.importorskip("fastapi", reason="needs the serve extra: pip install '.[serve]'")


def _chromium() -> str:
    """The system browser; without it (or Playwright), skip with the reason, or fail under
    CI ($CI set): `make test` installs both."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "playwright is not installed (pip install '.[test]')"
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and reason is None:
        reason = "no chromium on PATH (make browser-test-tools installs Debian's)"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture
def server(tmp_path):
    server = ServerProcess(tmp_path / "data", tmp_path / "models", "--token", "page-token")
    yield server.start()
    server.stop()


def test_page_restores_a_photo_and_a_clip(server, media, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    browser_path = _chromium()
    photo = tiny_photo(media, tmp_path / "portrait.png", width=248)
    clip = real_clip(media, tmp_path / "talk.mp4", frames=10, width=194)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path,
                                    args=["--no-sandbox", "--autoplay-policy="
                                          "no-user-gesture-required"])
        page = browser.new_page(viewport={"width": 1200, "height": 900}, accept_downloads=True)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url)
        expect(page.locator("#token-box")).to_be_visible()  # asked once, then remembered
        page.fill("#token", "page-token")
        page.click("#token-form button")
        expect(page.locator("#token-box")).to_be_hidden()

        # a file that is no picture, whatever its name, is refused with the CLI's line
        (tmp_path / "notes.png").write_text("not a picture")
        page.set_input_files("#file", str(tmp_path / "notes.png"))
        page.click("#go")
        expect(page.locator("#submit-error")).to_have_text(
            "notes.png: neither an image nor a video (Invalid data found when processing "
            "input)")
        expect(page.locator(".job")).to_have_count(0)

        for path in (photo, clip):
            page.set_input_files("#file", str(path))
            # the default preset (identity scored, so there is an identity plot) with the
            # bundled restorer, and a plain resize for the background (fast on a CPU)
            page.select_option("select[name=preset]", "default")
            page.select_option("select[name=face_model]", "vidrestore-face-v2")
            page.select_option("select[name=bg_model]", "none")
            page.click("#go")
            expect(page.locator("#submit-error")).to_have_text("")
            expect(page.locator(".job")).to_have_count(1 if path is photo else 2)
        image_job = page.locator(".job", has_text="portrait.png")
        video_job = page.locator(".job", has_text="talk.mp4")
        for job in (image_job, video_job):
            expect(job).to_have_attribute("data-state", "done", timeout=180_000)

        # the photo: both images decoded, and the slider moves the cut
        expect(image_job.locator(".compare img.after")).to_have_js_property("complete", True)
        assert image_job.locator("img.after").evaluate("i => i.naturalWidth") == 496
        assert image_job.locator("img.before").evaluate("i => i.naturalWidth") == 248
        image_job.locator(".compare input[type=range]").fill("20")
        clip_path = image_job.locator("img.before").evaluate("i => i.style.clipPath")
        assert clip_path == "inset(0px 80% 0px 0px)", clip_path

        # the clip: input and result decoded by the browser, and played together
        videos = video_job.locator("video")
        expect(videos).to_have_count(2)
        page.wait_for_function("""() => [...document.querySelectorAll('.job.done video')]
                                  .every(v => v.readyState >= 2)""", timeout=30_000)
        widths = videos.evaluate_all("vs => vs.map(v => v.videoWidth)")
        assert widths == [194, 388], widths
        videos.nth(1).evaluate("v => v.play()")
        time.sleep(0.8)
        times = videos.evaluate_all("vs => vs.map(v => [v.currentTime, v.paused])")
        assert not times[0][1] and not times[1][1], times  # both play
        assert abs(times[0][0] - times[1][0]) < 0.25, times
        videos.nth(1).evaluate("v => v.pause()")
        videos.nth(1).evaluate("v => { v.currentTime = 0.1; }")
        page.wait_for_function("""() => { const v = document.querySelectorAll('.job.done video');
                                  return Math.abs(v[0].currentTime - 0.1) < 0.06; }""")
        for job in (image_job, video_job):  # the identity plot of each
            expect(job.locator(".plots img")).to_have_js_property("complete", True)
            assert job.locator(".plots img").evaluate("i => i.naturalWidth") > 100

        # the download button gives the restored file
        with page.expect_download() as download:
            image_job.locator("a.download-output").click()
        saved = tmp_path / "downloaded.png"
        download.value.save_as(saved)
        assert download.value.suggested_filename == "portrait_restored.png"
        with server.client("page-token") as client:
            job_id = image_job.get_attribute("data-id")
            assert saved.read_bytes() == client.get(f"/api/jobs/{job_id}/output").content
            for job in client.get("/api/jobs").json():
                assert job["summary"]["failed_frames"] == 0, job["summary"]["failures"]

        videos.nth(1).evaluate("v => { v.currentTime = 0.3; }")
        page.mouse.move(0, 0)
        image_job.locator(".compare input[type=range]").fill("50")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    assert errors == []
