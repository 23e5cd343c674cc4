"""Everything the pre-validator passes on, sippy's parser reads without raising.

sippy is imported in a child process: its event dispatcher binds to the thread that first imports it,
and that must be the SIP thread of whichever test starts a real stack, not pytest's main thread.
The child walks each message the way SipTransactionManager.handleIncoming, the UA and our request hook
do: decode, parse, transaction ids, every header body, top Via address, a generated response, copies.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from tests.unit.test_sip_validate import SEED_MESSAGES, fuzz_originals, mutate
from trunkline.sip.validate import Pass, precheck

CORPUS = Path("/work/shared/corpus/sip-torture")
SOURCE = ("127.0.0.1", 5062)

_WORKER = r"""
import base64, json, sys
from sippy.SipRequest import SipRequest
from sippy.SipResponse import SipResponse
from sippy.Exceptions.SdpParseError import SdpParseError

def walk(msg):
    for h in msg.headers:
        h.getBody(); str(h); h.getCopy()
    str(msg)

def check(data, deep_body):
    assert len(data) >= 32, "sippy ignores datagrams shorter than 32 octets"
    text = data.decode()
    if text.startswith("SIP/2.0 "):
        resp = SipResponse(text)
        resp.getTId(True, True); resp.getSCode(); resp.getHFBody("via").getBranch()
        walk(resp)
        return
    req = SipRequest(text)
    req.getTIds(); req.getTId(wBRN=True); req.getTId(wTTG=True); req.getTId(True, True)
    via = req.getHFBody("via")
    via.getAddr()
    via.params["received"] = "127.0.0.1"
    via.params["rport"] = "5062"
    via.getTAddr()
    walk(req)
    str(req.getRURI().getCopy()); req.getRURI().username
    req.getHFBody("to").getUrl().username
    if req.countHFs("contact"):
        contact = req.getHFBody("contact")
        if not contact.asterisk:
            contact.getUrl().getCopy()
    resp = req.genResponse(200, "OK")
    resp.getHFBody("to").genTag()
    str(resp); resp.getHFBody("via").getTAddr()
    if deep_body and req.getBody() is not None:
        try:
            req.getBody().parse()
            str(req.getBody())
        except SdpParseError:
            pass  # sippy answers these itself (488); SDP semantics belong to trunkline.sip.sdp

job = json.load(sys.stdin)
failures = []
for item in job["messages"]:
    data = base64.b64decode(item)
    try:
        check(data, job["deep_body"])
    except Exception as exc:
        failures.append({"message": item, "error": f"{type(exc).__name__}: {exc}"})
json.dump(failures, sys.stdout)
"""


def sippy_failures(messages: list[bytes], deep_body: bool) -> list[dict[str, str]]:
    """Run the sippy walk over `messages` in a child process; the list of (message, error) that raised."""
    import base64

    job = {"messages": [base64.b64encode(m).decode() for m in messages], "deep_body": deep_body}
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER], input=json.dumps(job), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.dat")) + sorted((CORPUS / "rfc5118").glob("*.dat"))


def passed(data: bytes) -> bytes | None:
    verdict = precheck(data, SOURCE)
    return verdict.data if isinstance(verdict, Pass) else None


def test_every_passed_corpus_message_parses_in_sippy() -> None:
    outputs = {f.name: passed(f.read_bytes()) for f in corpus_files()}
    messages = [m for m in outputs.values() if m is not None] + [passed(m) or b"" for m in SEED_MESSAGES]
    assert len(messages) >= 20 + len(SEED_MESSAGES)  # the corpus has that many messages for the stack
    assert sippy_failures(messages, deep_body=True) == []


def test_the_raw_corpus_does_break_sippy() -> None:
    # The reason the pre-validator exists: without it sippy raises on a good part of the corpus.
    failures = sippy_failures([f.read_bytes() for f in corpus_files()], deep_body=False)
    assert len(failures) >= 10


def test_mutated_corpus_messages_that_pass_parse_in_sippy() -> None:
    rng = random.Random(4475)
    originals = [m for m in fuzz_originals() if passed(m) is not None]
    outputs: dict[bytes, bytes] = {}
    for _ in range(4000):
        data = rng.choice(originals)
        for _ in range(rng.randrange(1, 3)):
            data = mutate(rng, data)
        out = passed(data)
        if out is not None:
            outputs.setdefault(out, data)
    assert len(outputs) > 400  # many edits keep a message acceptable
    failures = sippy_failures(list(outputs), deep_body=False)
    assert failures == [], failures[:5]
