"""demo/app.py: the model picker and cache, and the page driven in a real headless Chromium.

The browser test serves the app on 127.0.0.1 with the scene stand-in model of
``test_demo_predictor`` (things 10..13 painted back to front), uploads the image, clicks thing 10,
moves the depth slider and checks what the page shows. It needs Debian's ``chromium`` and
``chromium-driver`` (``.ci/run`` installs them) and skips, naming what is missing, elsewhere.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_demo_predictor import OD_CONFIG, scene_predictor

gr = pytest.importorskip("gradio", reason="the web demo needs the [app] extra (gradio)")

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _app_module():
    spec = importlib.util.spec_from_file_location("instaformer_app", REPO / "demo" / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


app = _app_module()


def test_model_choices_offer_the_quickstart_model_only_when_trained(tmp_path):
    choices = app.model_choices(tmp_path)
    assert choices[-1] == app.CUSTOM_LABEL and app.QUICKSTART_LABEL not in choices
    assert "instaformer_od_swin_t" in choices and len(choices) == 16  # 15 InstaFormer models
    final = tmp_path / "train" / "model_final.pth"
    final.parent.mkdir(parents=True)
    final.write_bytes(b"")
    assert app.model_choices(tmp_path) == [app.QUICKSTART_LABEL, *choices]


def test_a_zoo_choice_uses_its_config_and_zoo_weights():
    built = []
    cache = app.PredictorCache("cpu", factory=lambda *args: built.append(args) or object())
    cache.get("instaformer_od_swin_t", "ignored.yaml", "ignored.pth", 0.8)
    config, weights, _ = built[0]
    assert config.endswith("occlusion_depth/all/swin/maskformer2_swin_tiny_bs16_50ep.yaml")
    assert weights == "zoo://instaformer_od_swin_t"


def test_predictor_cache_builds_once_and_names_bad_fields():
    built = []

    def factory(config, weights, opts):
        built.append((config, weights, opts))
        return object()

    cache = app.PredictorCache("cpu", factory=factory, size=1)
    first = cache.get(app.CUSTOM_LABEL, "synthetic/instaformer_od_tiny.yaml", "", 0.5)
    assert cache.get(app.CUSTOM_LABEL, "synthetic/instaformer_od_tiny.yaml", " ", 0.5) is first
    assert len(built) == 1 and built[0][2][-2:] == ["MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD",
                                                    "0.5"]  # fmt: skip
    cache.get(app.CUSTOM_LABEL, "synthetic/instaformer_od_tiny.yaml", "", 0.5, "SEED 3")
    assert len(built) == 2 and built[1][2][-2:] == ["SEED", "3"]
    with pytest.raises(ValueError, match="KEY VALUE pairs; got 'SEED'"):
        cache.get(app.CUSTOM_LABEL, "synthetic/instaformer_od_tiny.yaml", "", 0.5, "SEED")
    with pytest.raises(ValueError, match="choose a config file"):
        cache.get(app.CUSTOM_LABEL, " ", "", 0.5)


def test_model_choices_when_hosted_are_zoo_models_only(tmp_path):
    final = tmp_path / "train" / "model_final.pth"
    final.parent.mkdir(parents=True)
    final.write_bytes(b"")
    choices = app.model_choices(tmp_path, hosted=True)
    assert choices == [e.name for e in app.model_zoo.ENTRIES if e.family == "instaformer"]


def test_a_model_weights_override_is_applied_or_refused_never_dropped():
    built = []
    cache = app.PredictorCache("cpu", factory=lambda *args: built.append(args) or object())
    config = "synthetic/instaformer_od_tiny.yaml"
    cache.get(app.CUSTOM_LABEL, config, "", 0.5, "MODEL.WEIGHTS w.pth SEED 3")
    assert built[0][1] == "w.pth" and "MODEL.WEIGHTS" not in built[0][2]
    assert built[0][2][-2:] == ["SEED", "3"]
    with pytest.raises(ValueError, match="MODEL.WEIGHTS is given twice: the checkpoint field "
                                         "'a.pth' and the override 'b.pth'"):  # fmt: skip
        cache.get(app.CUSTOM_LABEL, config, "a.pth", 0.5, "MODEL.WEIGHTS b.pth")
    with pytest.raises(ValueError, match="instaformer_od_swin_t comes with its own weights"):
        cache.get("instaformer_od_swin_t", config, "", 0.5, "MODEL.WEIGHTS b.pth")
    assert len(built) == 1


@pytest.mark.parametrize(
    "choice, config, weights, overrides",
    [
        (app.CUSTOM_LABEL, "/etc/passwd", "/etc/shadow", ""),
        (app.QUICKSTART_LABEL, "", "", ""),
        ("instaformer_od_swin_t", "", "https://example.com/x.pth", ""),
        ("instaformer_od_swin_t", "", "", "MODEL.WEIGHTS /etc/shadow"),
        ("instaformer_od_swin_t", "/etc/passwd", "", ""),
    ],
)
def test_hosted_cache_takes_zoo_names_only(choice, config, weights, overrides):
    built = []
    cache = app.PredictorCache("cpu", factory=lambda *a: built.append(a) or object(), hosted=True)
    with pytest.raises(ValueError, match="this server is hosted: choose a model by its zoo name"):
        cache.get(choice, config, weights, 0.5, overrides)
    assert built == []
    cache.get("instaformer_od_swin_t", "", "", 0.5)
    assert built[0][:2] == (
        app.model_zoo.get_entry("instaformer_od_swin_t").config,
        "zoo://instaformer_od_swin_t",
    )


def test_default_factory_builds_a_random_init_model_from_a_config_name():
    predictor = app.build_predictor(str(OD_CONFIG), "", ["MODEL.DEVICE", "cpu"])
    assert predictor.tasks == ("occlusion", "depth")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _driver(profile: Path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,2000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))


def _click_pixel(driver, element, x: float, y: float, width: int, height: int) -> None:
    """Click pixel ``(x, y)`` of a ``width x height`` picture shown in an ``<img>``."""
    from selenium.webdriver.common.action_chains import ActionChains

    box_w, box_h, nat_w, nat_h, fit = driver.execute_script(
        "const i = arguments[0], b = i.getBoundingClientRect();"
        "return [b.width, b.height, i.naturalWidth, i.naturalHeight,"
        " getComputedStyle(i).objectFit]",
        element,
    )
    shown = min(box_w / nat_w, box_h / nat_h)
    if fit in ("scale-down", "none"):
        shown = min(shown, 1.0) if fit == "scale-down" else 1.0
    dx = ((x + 0.5) * nat_w / width - nat_w / 2) * shown
    dy = ((y + 0.5) * nat_h / height - nat_h / 2) * shown
    ActionChains(driver).move_to_element_with_offset(element, int(dx), int(dy)).click().perform()


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)
def test_page_in_a_real_browser(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    predictor, image = scene_predictor()
    upload = tmp_path / "scene.png"
    Image.fromarray(image).save(upload)
    result = predictor(image)
    cache = app.PredictorCache("cpu", factory=lambda config, weights, opts: predictor)
    port = _free_port()
    server = app.serve(cache, "127.0.0.1", port, block=False)
    driver = _driver(tmp_path / "profile")
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 60)

        def text(selector: str) -> str:
            return driver.find_element(By.CSS_SELECTOR, selector).text

        def picture(selector: str) -> str:
            return driver.find_element(By.CSS_SELECTOR, selector).get_attribute("src")

        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "#run").click()  # no image yet: said on the page
        wait.until(lambda d: "Upload an image first." in text("#status"))
        driver.find_element(By.CSS_SELECTOR, "#input-image input[type=file]").send_keys(str(upload))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image img"))
        driver.find_element(By.CSS_SELECTOR, "#run").click()
        wait.until(lambda d: "4 instance(s)" in text("#status"))
        assert "occlusion, depth" in text("#status")
        ranking = text("#ranking")
        assert ranking.index("#13") < ranking.index("#12") < ranking.index("#10")

        # click thing 10 (the farthest) where no other thing covers it
        masks = [s.mask for s in result.segments]
        alone = masks[0] & ~np.any(masks[1:], axis=0)
        assert result.segments[0].id == 10
        ys, xs = np.nonzero(alone)
        panoptic = driver.find_element(By.CSS_SELECTOR, "#panoptic img")
        height, width = image.shape[:2]
        _click_pixel(driver, panoptic, float(np.median(xs)), float(np.median(ys)), width, height)
        wait.until(lambda d: "Selected #10" in text("#status"))
        wait.until(lambda d: "occluded by it" in text("#relations") or "occludes it" in text(
            "#relations"))  # fmt: skip
        rows = text("#relations")
        # thing 11 occludes 10; 11, 12, 13 are all closer than 10; 10 occludes nothing
        assert "occludes it" in rows and "occluded by it" not in rows
        assert rows.count("closer") == 3 and "farther" not in rows
        assert driver.find_element(By.CSS_SELECTOR, "#occ-view img").get_attribute("src")

        before = picture("#layers-view img")
        slider = driver.find_element(By.CSS_SELECTOR, "#layers input[type=range]")
        slider.send_keys(Keys.HOME)
        slider.send_keys(Keys.ARROW_RIGHT)
        wait.until(lambda d: picture("#layers-view img") != before)
        assert slider.get_attribute("value") == "1"
        screenshot = tmp_path / "app.png"
        assert driver.save_screenshot(str(screenshot))
        shot = np.asarray(Image.open(screenshot))
        assert shot.shape[0] > 800 and shot.std() > 10  # a drawn page, not a blank one
    finally:
        driver.quit()
        server.close()
    time.sleep(0.1)
