"""What both plug-ins take from shared_protocol besides the client: the package loading without pyzmq
and msgpack (names that need them come on first use), the one default endpoint and "is it on this
machine?" rule, and the fill settings with their output-mode names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import shared_protocol
from shared_protocol import Client, ErrorKind, HiFillError, endpoints, messages
from shared_protocol.settings import OUTPUT_MODES, FillSettings, OutputMode, inpaint_options
from tests.editor_fakes import run_without_pyzmq_and_msgpack

REPO = Path(__file__).resolve().parents[2]
EDITOR_SIDE = ["shared_protocol", "plugin_gimp", "plugin_krita", "installer", "install.py"]


# ------------------------------------------------------------------------------- without pyzmq/msgpack


def test_the_standard_library_modules_load_without_pyzmq_and_msgpack() -> None:
    code = (
        "import shared_protocol, shared_protocol.regions, shared_protocol.errors, shared_protocol.limits\n"
        "import shared_protocol.endpoints, shared_protocol.settings, shared_protocol.launcher\n"
        "from shared_protocol import DEFAULT_ENDPOINT, ErrorKind, HiFillError, Limits\n"
        "assert not {'shared_protocol.client', 'shared_protocol.messages'} & set(sys.modules)\n"
        "try:\n"
        "    shared_protocol.Client\n"
        "except ImportError as error:\n"
        "    print('Client:', error)\n"
        "print(DEFAULT_ENDPOINT, ErrorKind.TIMEOUT.value, Limits().max_frames)\n"
    )
    printed = run_without_pyzmq_and_msgpack(REPO, code).splitlines()
    assert printed[0].startswith("Client: import of zmq halted")  # says which package is missing
    assert printed[1] == "tcp://127.0.0.1:47631 timeout 8"


def test_every_public_name_resolves_and_lazy_names_are_the_modules_own() -> None:
    from shared_protocol import client, curve

    assert all(getattr(shared_protocol, name) is not None for name in shared_protocol.__all__)
    assert set(shared_protocol.__all__) <= set(dir(shared_protocol))
    assert Client is client.Client and shared_protocol.CurveKeys is curve.CurveKeys
    assert shared_protocol.Op is messages.Op and shared_protocol.DEFAULT_LIMITS is messages.DEFAULT_LIMITS
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        shared_protocol.Nothing  # noqa: B018


# ---------------------------------------------------------------------------------- the endpoint rule


def test_the_default_endpoint_is_defined_once() -> None:
    """Every other module names endpoints.DEFAULT_ENDPOINT; no editor-side file defines its own copy,
    nor its own list of loopback hosts."""
    from installer import common

    assert messages.DEFAULT_ENDPOINT is endpoints.DEFAULT_ENDPOINT is shared_protocol.DEFAULT_ENDPOINT
    assert common.backend_config(Path("/python"))["endpoint"] is endpoints.DEFAULT_ENDPOINT
    definition = re.compile(r"^\s*\w*(ENDPOINT|LOCAL_HOSTS)\w*\s*(:[^=]*)?=\s*(f?[\"']|\()", re.MULTILINE)
    files = [
        p
        for name in EDITOR_SIDE
        for p in ([REPO / name] if name.endswith(".py") else (REPO / name).rglob("*.py"))
    ]
    found = {
        str(p.relative_to(REPO)): m.group(0).strip()
        for p in files
        for m in definition.finditer(p.read_text())
    }
    assert found == {"shared_protocol/endpoints.py": 'DEFAULT_ENDPOINT = f"'}


@pytest.mark.parametrize(
    ("endpoint", "local"),
    [
        ("tcp://127.0.0.1:47631", True),
        ("tcp://127.3.4.5:1", True),
        ("tcp://localhost:1", True),
        ("tcp://[::1]:5", True),
        ("ipc:///tmp/x", True),
        ("inproc://x", True),
        ("tcp://192.168.1.5:47631", False),
        ("tcp://example.org:1", False),
        ("tcp://localhost.example.org:1", False),
    ],
)
def test_the_client_and_the_launcher_use_the_one_rule(endpoint: str, local: bool) -> None:
    """Shared memory (client) and starting a backend (launcher) follow endpoints.is_local_endpoint."""
    from shared_protocol import launcher

    assert endpoints.is_local_endpoint(endpoint) is local
    reason = Client(endpoint)._shared_memory_unusable() or ""
    assert ("is not an address on this machine" in reason) is not local
    if not local:
        with pytest.raises(HiFillError, match="only be started here for an endpoint on this computer"):
            launcher.start_backend(launcher.BackendConfig(("/python",), "/", ""), endpoint, Path("/nowhere"))


def test_a_malformed_endpoint_is_a_sentence_not_a_zmq_error() -> None:
    with Client("tcp://no-port-here", connect_timeout_s=0.5) as client, pytest.raises(HiFillError) as caught:
        client.hello()
    assert caught.value.kind is ErrorKind.BAD_REQUEST
    assert caught.value.message == "'tcp://no-port-here' needs a host and a port, e.g. tcp://127.0.0.1:47631."


# ------------------------------------------------------------------------------------------ settings


def test_output_modes_have_one_spelling_and_read_the_old_one() -> None:
    assert OUTPUT_MODES == ("new-layer", "in-place")  # GIMP's choice names: remembered arguments stay valid
    assert OutputMode("new_layer") is OutputMode.NEW_LAYER and OutputMode("in_place") is OutputMode.IN_PLACE
    assert OutputMode.parse("in-place") is OutputMode.IN_PLACE
    for wrong in ("sideways", "in__place", "", "IN-PLACE"):
        with pytest.raises(ValueError, match="Unknown output mode .*; use one of new-layer, in-place"):
            OutputMode.parse(wrong)


def test_fill_settings_defaults_and_request_options() -> None:
    settings = FillSettings()
    assert (settings.output_mode, settings.context_px, settings.endpoint, settings.keys_folder) == (
        OutputMode.NEW_LAYER,
        None,
        endpoints.DEFAULT_ENDPOINT,
        "",
    )
    assert settings.inpaint_options() == {} == inpaint_options(None)
    assert FillSettings(context_px=0).inpaint_options() == {"context_px": 0}
