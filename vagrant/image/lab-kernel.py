"""Run cells in a kernel of a seat's JupyterLab, as a learner's browser does: through
the seat's port with its token, over Jupyter's REST and WebSocket kernel API
(jupyter-server's docs: "REST API", "Kernel WebSocket protocol"; the messages are
jupyter-client's, "Messaging in Jupyter").

    lab-kernel.py URL TOKEN_FILE CELL [CELL...]

Starts a python3 kernel, runs each cell (stops at the first error), prints every
cell's output, shuts the kernel down. Exit 0 only if every cell ran without error.
Used by `make test-vm` (vagrant/image/vm.sh) with the run's forwarded port: needs
tornado (the course's .venv has it, through jupyter-server).
"""
import asyncio
import datetime
import json
import sys
import urllib.request
import uuid

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


def rest(url, token, method, path, body=None):
    req = urllib.request.Request(url + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"token {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:   # a kernel's start under emulation
        text = r.read()
    return json.loads(text) if text else None


def message(session, code):
    return {"header": {"msg_id": uuid.uuid4().hex, "username": "test-vm", "session": session,
                       "msg_type": "execute_request", "version": "5.3",
                       "date": datetime.datetime.now(datetime.timezone.utc).isoformat()},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}


async def run_cells(url, token, kernel, cells):
    ws_url = url.replace("http", "ws", 1) + f"/api/kernels/{kernel}/channels"
    conn = await websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {token}"},
                                               connect_timeout=600))
    session = uuid.uuid4().hex
    ok = True
    for code in cells:
        msg = message(session, code)
        await conn.write_message(json.dumps(msg))
        reply = idle = False
        print(f">>> {code}")
        while not (reply and idle):
            text = await asyncio.wait_for(conn.read_message(), timeout=600)
            if text is None:
                raise SystemExit("the kernel's WebSocket closed")
            m = json.loads(text)
            if m.get("parent_header", {}).get("msg_id") != msg["header"]["msg_id"]:
                continue
            kind, content = m["msg_type"], m["content"]
            if kind == "stream":
                print(content["text"], end="")
            elif kind in ("execute_result", "display_data"):
                print(content["data"].get("text/plain", ""))
            elif kind == "error":
                print("\n".join(content["traceback"]))
            elif kind == "execute_reply":
                reply = True
                ok = ok and content["status"] == "ok"
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
        if not ok:
            break
    conn.close()
    return ok


def main():
    url, token_file, cells = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3:]
    with open(token_file) as f:
        token = f.read().strip()
    kernel = rest(url, token, "POST", "/api/kernels", {"name": "python3"})["id"]
    try:
        ok = asyncio.run(run_cells(url, token, kernel, cells))
    finally:
        rest(url, token, "DELETE", f"/api/kernels/{kernel}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
