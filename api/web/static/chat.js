// The web chat page: plain JavaScript, no build step, no third-party code.
//
// It speaks the gateway's /v1 API with `Authorization: Bearer <key>`. The key is kept in
// sessionStorage (this tab only) and never put in a URL. Replies stream over
// `POST /v1/sessions/{id}/messages/stream`, read with fetch() and parsed as Server-Sent
// Events here (EventSource cannot POST or send headers); a stream that breaks off is resumed
// with `Last-Event-ID` on `GET /v1/sessions/{id}/messages/{message_id}/stream`.
// Text from users, models and tools only ever goes into the page through textContent.
"use strict";

(() => {
  const KEY_STORAGE = "durable-chat.api-key";
  const PAGE_SIZE = 500;
  const MAX_RECONNECTS = 8;
  const LIVE_STATES = new Set(["working", "awaiting_approval"]);
  const CLOSED_STATES = new Set(["expired", "ended"]);

  const $ = (id) => document.getElementById(id);
  const state = {
    key: null,
    sessionId: null,
    status: null, // the last GET /v1/sessions/{id}
    view: 0, // bumped whenever another session is opened: late answers are dropped
    streaming: null, // AbortController of the stream being read
    tools: [],
  };

  // ---- small helpers ---------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  const enc = encodeURIComponent;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function newId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function when(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
  }

  function duration(seconds) {
    if (seconds % 86400 === 0) return `${seconds / 86400} d`;
    if (seconds % 3600 === 0) return `${seconds / 3600} h`;
    if (seconds % 60 === 0) return `${seconds / 60} min`;
    return `${seconds} s`;
  }

  const statusLabel = (status) => String(status).replaceAll("_", " ");

  function usageText(usage) {
    if (!usage) return "";
    const total = usage.total_tokens ?? usage.prompt_tokens + usage.completion_tokens;
    return `${total} tokens (${usage.prompt_tokens} prompt, ${usage.completion_tokens} completion)`;
  }

  function prettyArguments(text) {
    try {
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      return String(text);
    }
  }

  // ---- the API ---------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail, retryAfter) {
      super(detail);
      this.status = status;
      this.detail = detail;
      this.retryAfter = retryAfter;
    }
  }

  function describeDetail(detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      // FastAPI's validation errors: [{loc: ["body", "content"], msg: "..."}]
      return detail
        .map((d) => {
          const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
          return where ? `${where}: ${d.msg}` : String(d.msg);
        })
        .join("; ");
    }
    return detail === undefined ? "" : JSON.stringify(detail);
  }

  async function errorOf(response) {
    let detail = "";
    try {
      detail = describeDetail((await response.json()).detail);
    } catch {
      // not JSON: keep the status line
    }
    return new ApiError(
      response.status,
      detail || `${response.status} ${response.statusText}`.trim(),
      response.headers.get("Retry-After"),
    );
  }

  function headers(extra) {
    return { Authorization: `Bearer ${state.key}`, ...extra };
  }

  async function request(method, path, body, key) {
    const init = {
      method,
      cache: "no-store",
      headers: { Authorization: `Bearer ${key ?? state.key}`, Accept: "application/json" },
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, `cannot reach the gateway (${err.message})`);
    }
    if (!response.ok) throw await errorOf(response);
    return response.json();
  }

  function explain(err) {
    if (!(err instanceof ApiError)) return `Something went wrong: ${err && err.message}`;
    switch (err.status) {
      case 0:
        return `The gateway cannot be reached: ${err.detail}. Check your connection and retry.`;
      case 401:
        return `Your API key was not accepted (${err.detail}).`;
      case 404:
        return `Not found: ${err.detail}.`;
      case 409:
        return `Refused: ${err.detail}.`;
      case 413:
      case 422:
        return `The request was refused: ${err.detail}.`;
      case 429:
        return `Too busy or over a quota: ${err.detail}.` +
          (err.retryAfter ? ` Retry in ${err.retryAfter} s.` : "");
      case 503:
        return `The service is unavailable right now: ${err.detail}.` +
          (err.retryAfter ? ` Retry in ${err.retryAfter} s.` : "");
      default:
        return `Error ${err.status}: ${err.detail}.`;
    }
  }

  // Every failure of a call the user started ends up here.
  function report(err) {
    if (err instanceof ApiError && err.status === 401 && state.key) {
      signOut(explain(err) + " Sign in again.");
      return;
    }
    showBanner(explain(err));
  }

  function showBanner(text) {
    $("banner-text").textContent = text;
    $("banner").hidden = false;
  }

  function hideBanner() {
    $("banner").hidden = true;
    $("banner-text").textContent = "";
  }

  // ---- Server-Sent Events over fetch() ----------------------------------------------------

  async function* serverEvents(body, signal) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let event = "message";
    let data = [];
    let id = null;
    const stop = () => reader.cancel().catch(() => {});
    signal.addEventListener("abort", stop);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += decoder.decode(value, { stream: true });
        let newline;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          let line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + 1);
          if (line.endsWith("\r")) line = line.slice(0, -1);
          if (line === "") {
            if (data.length) yield { event, id, data: JSON.parse(data.join("\n")) };
            event = "message";
            data = [];
            id = null;
            continue;
          }
          if (line.startsWith(":")) continue; // a keepalive comment
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "event") event = value;
          else if (field === "data") data.push(value);
          else if (field === "id") id = value;
        }
      }
    } finally {
      signal.removeEventListener("abort", stop);
      stop();
    }
  }

  // ---- one turn on the page ------------------------------------------------------------

  // The assistant's side of one turn: its model steps (text, tool calls with their results),
  // then the reply's usage or error. History and live events both draw through this.
  class TurnView {
    constructor(turn) {
      this.node = el("li", "msg assistant");
      this.node.append(el("div", "who", "Assistant"));
      this.body = el("div", "steps");
      this.node.append(this.body);
      this.status = el("div", "turn-status muted");
      this.node.append(this.status);
      this.meta = el("div", "meta muted");
      this.node.append(this.meta);
      this.steps = new Map();
      this.calls = new Map();
      this.replaying = new Set(); // steps whose text the stream sends again from the start
      this.setTurn(turn);
    }

    setTurn(turn) {
      if (turn !== null && turn !== undefined) this.node.dataset.turn = String(turn);
    }

    step(number) {
      let step = this.steps.get(number);
      if (!step) {
        step = el("div", "step");
        step.dataset.step = String(number);
        const text = el("div", "text");
        step.append(text);
        this.body.append(step);
        this.steps.set(number, step);
      }
      return step;
    }

    textOf(number) {
      return this.step(number).querySelector(".text");
    }

    // An attach (after a reload) replays each step's text from its start: replace, not add.
    replay() {
      for (const number of this.steps.keys()) this.replaying.add(number);
    }

    delta(number, text) {
      const node = this.textOf(number);
      if (this.replaying.delete(number)) node.textContent = "";
      node.textContent += text;
      node.classList.add("streaming");
      this.working("");
    }

    restart(number) {
      this.replaying.delete(number);
      this.textOf(number).textContent = "";
      this.working("The model call is being retried…");
    }

    working(text) {
      this.status.textContent = text;
    }

    toolCall(number, call, approval) {
      let card = this.calls.get(call.id);
      if (!card) {
        card = el("div", "tool-call");
        card.dataset.callId = call.id;
        const title = el("div", "tool-title");
        title.append(el("span", "label", "Tool call "), el("code", "tool-name", call.name));
        card.append(title, el("pre", "tool-args", prettyArguments(call.arguments)));
        card.append(el("div", "approval"));
        this.step(number).append(card);
        this.calls.set(call.id, card);
      }
      if (approval && !card.dataset.approval) this.setApproval(card, approval);
      return card;
    }

    setApproval(card, approval, reason) {
      card.dataset.approval = approval;
      const box = card.querySelector(".approval");
      box.replaceChildren();
      if (approval === "pending" && !card.querySelector(".tool-result")) {
        box.append(approvalControls(card));
        this.working("Waiting for your approval…");
        return;
      }
      const words = {
        approved: "Approved",
        decided: "Decided",
        denied: "Denied",
        timed_out: "Not decided in time: denied",
      };
      const text = el("span", `decision ${approval}`, words[approval] || approval);
      box.append(text);
      if (reason) box.append(el("span", "muted", ` (${reason})`));
      const running = approval === "approved" && !card.querySelector(".tool-result");
      this.working(running ? "Running the tool…" : "");
    }

    toolResult(result) {
      let card = this.calls.get(result.call_id);
      if (!card) {
        card = el("div", "tool-call");
        this.body.append(card);
      }
      card.querySelector(".tool-result")?.remove();
      if (card.dataset.approval === "pending") {
        this.setApproval(card, result.is_error ? "decided" : "approved"); // decided elsewhere
      }
      const box = el("div", result.is_error ? "tool-result is-error" : "tool-result");
      const title = result.is_error ? "Tool error" : "Tool result";
      box.append(el("div", "label", result.name ? `${title} (${result.name})` : title));
      box.append(el("pre", "", result.content));
      if (result.truncated) box.append(el("div", "muted", "(cut to the size limit)"));
      card.append(box);
      const controls = card.querySelector(".approval-controls");
      if (controls) controls.remove();
      this.working("");
    }

    complete(reply) {
      for (const node of this.body.querySelectorAll(".streaming")) {
        node.classList.remove("streaming");
      }
      this.working("");
      this.node.classList.add("done");
      this.node.querySelector(".turn-error")?.remove();
      if (reply.error) {
        this.node.classList.add("failed");
        this.node.append(el("div", "error turn-error", `The model call failed: ${reply.error}`));
      }
      const parts = [];
      if (reply.model) parts.push(reply.model);
      if (reply.usage) parts.push(usageText(reply.usage));
      this.meta.textContent = parts.join(" · ");
    }

    problem(text) {
      this.working(text);
    }
  }

  function approvalControls(card) {
    const box = el("div", "approval-controls");
    box.append(el("span", "question", "Run this tool?"));
    const approve = el("button", "approve", "Approve");
    const deny = el("button", "deny", "Deny");
    approve.type = "button";
    deny.type = "button";
    const reason = el("input", "reason");
    reason.type = "text";
    reason.placeholder = "reason for a denial (optional)";
    reason.maxLength = 2000;
    box.append(approve, deny, reason);
    const decide = async (yes) => {
      approve.disabled = true;
      deny.disabled = true;
      const sessionId = state.sessionId;
      const body = { approve: yes };
      if (!yes && reason.value.trim()) body.reason = reason.value.trim();
      try {
        await request(
          "POST",
          `v1/sessions/${enc(sessionId)}/tool-calls/${enc(card.dataset.callId)}/decision`,
          body,
        );
        const view = turnViews.get(card.closest(".msg")?.dataset.turn);
        const decided = yes ? "approved" : "denied";
        if (view) view.setApproval(card, decided, body.reason);
        else card.dataset.approval = decided;
      } catch (err) {
        if (err instanceof ApiError && err.status === 409) {
          box.replaceWith(el("span", "decision", `Already decided: ${err.detail}`));
          return;
        }
        approve.disabled = false;
        deny.disabled = false;
        report(err);
      }
    };
    approve.addEventListener("click", () => decide(true));
    deny.addEventListener("click", () => decide(false));
    return box;
  }

  const turnViews = new Map(); // turn number (string) -> TurnView, for the open session

  function turnView(turn) {
    const key = String(turn);
    let view = turnViews.get(key);
    if (!view) {
      view = new TurnView(turn);
      turnViews.set(key, view);
      placeAfterUser(view.node, turn);
    }
    return view;
  }

  function placeAfterUser(node, turn) {
    const list = $("messages");
    const user = list.querySelector(`.msg.user[data-turn="${CSS.escape(String(turn))}"]`);
    if (user) user.after(node);
    else list.append(node);
  }

  function userMessage(content, id, turn) {
    const node = el("li", "msg user");
    node.append(el("div", "who", "You"), el("div", "text", content));
    if (id) node.dataset.messageId = id;
    if (turn !== null && turn !== undefined) node.dataset.turn = String(turn);
    $("messages").append(node);
    return node;
  }

  function scrollDown() {
    const list = $("messages");
    list.scrollTop = list.scrollHeight;
  }

  // ---- history ------------------------------------------------------------------------

  async function allMessages(sessionId) {
    const messages = [];
    let after = 0;
    for (;;) {
      const page = await request(
        "GET",
        `v1/sessions/${enc(sessionId)}/messages?after=${after}&limit=${PAGE_SIZE}`,
      );
      messages.push(...page.messages);
      if (page.next === null || page.next === undefined) return messages;
      after = page.next;
    }
  }

  function drawHistory(messages) {
    const steps = new Map(); // turn -> model steps so far
    for (const message of messages) {
      if (message.role === "user") {
        const known = `.msg.user[data-message-id="${CSS.escape(message.id)}"]`;
        if (!$("messages").querySelector(known)) {
          userMessage(message.content, message.id, message.turn);
        }
      } else if (message.role === "assistant") {
        const view = turnView(message.turn);
        const step = (steps.get(message.turn) || 0) + 1;
        steps.set(message.turn, step);
        if (message.content) view.textOf(step).textContent = message.content;
        for (const call of message.tool_calls || []) {
          const card = view.toolCall(step, call, call.approval);
          if (call.approval && call.approval !== "pending") {
            view.setApproval(card, call.approval, call.decision_reason);
          }
        }
        if (message.reply_to) view.complete(message);
      } else if (message.role === "tool") {
        turnView(message.turn).toolResult({
          call_id: message.tool_call_id,
          name: message.tool_name,
          content: message.content,
          is_error: message.is_error,
          truncated: message.truncated,
        });
      }
    }
  }

  // ---- streaming a turn -----------------------------------------------------------------

  // Reads one turn's events until `turn_completed`, reconnecting with Last-Event-ID when the
  // stream breaks off. `first` opens the stream (the POST that sends the message, or an
  // attach); reconnects attach to `messageId`'s turn.
  async function followTurn(sessionId, messageId, first, view, replaying) {
    const controller = new AbortController();
    state.streaming?.abort();
    state.streaming = controller;
    setSending(true);
    let lastEventId = null;
    let failures = 0;
    let opened = false;
    let pendingError = null;
    try {
      for (;;) {
        let response;
        try {
          if (!opened || messageId === null) {
            response = await first(controller.signal);
          } else {
            const extra = { Accept: "text/event-stream" };
            if (lastEventId) extra["Last-Event-ID"] = lastEventId;
            response = await fetch(
              `v1/sessions/${enc(sessionId)}/messages/${enc(messageId)}/stream`,
              { headers: headers(extra), cache: "no-store", signal: controller.signal },
            );
          }
        } catch (err) {
          if (controller.signal.aborted) return;
          // The POST may or may not have stored the message: its id tells, on the attach.
          opened = true;
          if (++failures > MAX_RECONNECTS) throw new ApiError(0, err.message);
          view?.problem("Connection lost; reconnecting…");
          await sleep(Math.min(250 * 2 ** failures, 4000));
          continue;
        }
        if (!response.ok) {
          const err = await errorOf(response);
          const retry = [0, 429, 502, 503].includes(err.status);
          if (!opened || !retry || ++failures > MAX_RECONNECTS) {
            if (opened && err.status === 404 && lastEventId === null) {
              const lost = new ApiError(404, "the message did not reach the session");
              lost.notSent = true;
              throw lost;
            }
            err.notSent = !opened;
            throw err;
          }
          view?.problem(`${explain(err)} Reconnecting…`);
          await sleep(Math.min(250 * 2 ** failures, 4000));
          continue;
        }
        opened = true;
        try {
          for await (const event of serverEvents(response.body, controller.signal)) {
            if (event.id) lastEventId = event.id;
            failures = 0;
            const data = event.data;
            switch (event.event) {
              case "turn_started":
                messageId = messageId ?? data.message_id;
                if (!view) {
                  view = turnView(data.turn);
                } else if (!view.node.dataset.turn) {
                  view.setTurn(data.turn);
                  turnViews.set(String(data.turn), view);
                }
                if (replaying) view.replay();
                view.working("Thinking…");
                document.querySelector(`.msg.user[data-message-id="${CSS.escape(messageId)}"]`)
                  ?.setAttribute("data-turn", String(data.turn));
                refreshStatus(sessionId);
                break;
              case "delta":
                view.delta(data.step, data.text);
                scrollDown();
                break;
              case "restart":
                view.restart(data.step);
                break;
              case "tool_call":
                view.toolCall(data.step, data, data.needs_approval ? "pending" : null);
                if (data.needs_approval) refreshStatus(sessionId);
                scrollDown();
                break;
              case "tool_result":
                view.toolResult(data);
                scrollDown();
                break;
              case "error":
                pendingError = data; // a model error comes again in turn_completed
                break;
              case "turn_completed":
                view.complete(data);
                scrollDown();
                return;
              default:
                break;
            }
          }
        } catch (err) {
          if (controller.signal.aborted) return;
          if (err instanceof SyntaxError) throw err;
        }
        if (controller.signal.aborted) return;
        // The stream ended before its turn did: resume right after the last event.
        if (++failures > MAX_RECONNECTS) {
          throw new ApiError(pendingError?.status ?? 0, pendingError?.detail ?? "stream lost");
        }
        const why = pendingError ? `${pendingError.detail}. ` : "";
        view?.problem(`${why}Reconnecting…`);
        pendingError = null;
        await sleep(Math.min(250 * 2 ** failures, 4000));
      }
    } catch (err) {
      view?.problem("");
      view?.node.append(
        el("div", "error", `${explain(err)} The reply, if any, will be in the history: reload.`),
      );
      throw err;
    } finally {
      if (state.streaming === controller) {
        state.streaming = null;
        setSending(false);
      }
      if (!controller.signal.aborted && state.sessionId === sessionId) {
        refreshStatus(sessionId);
        loadSessions().catch(() => {});
      }
    }
  }

  function setSending(busy) {
    $("send").disabled = busy;
    $("send").textContent = busy ? "Replying…" : "Send";
  }

  async function sendMessage(content) {
    const sessionId = state.sessionId;
    const wasClosed = state.status && CLOSED_STATES.has(state.status.status);
    const notice = $("session-notice");
    const before = { text: notice.textContent, kind: notice.className, hidden: notice.hidden };
    const messageId = newId();
    const user = userMessage(content, messageId, null);
    const view = new TurnView(null);
    user.after(view.node);
    view.working("Sending…");
    scrollDown();
    const post = (signal) =>
      fetch(`v1/sessions/${enc(sessionId)}/messages/stream`, {
        method: "POST",
        headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
        body: JSON.stringify({ content, message_id: messageId }),
        cache: "no-store",
        signal,
      });
    if (wasClosed) {
      showNotice(`Resuming this ${state.status.status} session with its history…`, "info");
    }
    try {
      await followTurn(sessionId, messageId, post, view, false);
      if (wasClosed && state.sessionId === sessionId) {
        showNotice("Session resumed: it continued with its whole history.", "info");
      }
    } catch (err) {
      if (state.sessionId !== sessionId) return;
      if (err.notSent) {
        // Refused before it was stored: take it back into the box to edit or resend.
        user.classList.add("not-sent");
        user.append(el("div", "error", "Not sent."));
        view.node.remove();
        turnViews.delete(view.node.dataset.turn);
        if (!$("message-input").value) $("message-input").value = content;
      }
      if (wasClosed) {
        notice.textContent = before.text;
        notice.className = before.kind;
        notice.hidden = before.hidden;
      }
      report(err);
    }
  }

  // ---- sessions -------------------------------------------------------------------------

  async function loadSessions() {
    const { sessions } = await request("GET", "v1/sessions?limit=100");
    drawSessions(sessions);
  }

  function drawSessions(sessions) {
    const list = $("session-list");
    list.replaceChildren();
    // The list comes from Temporal's visibility store, a moment behind: keep the open one.
    if (state.sessionId && state.status && !sessions.some((s) => s.session_id === state.sessionId)) {
      sessions.unshift({
        session_id: state.sessionId,
        status: state.status.status,
        model: state.status.model,
        started_at: state.status.created_at,
      });
    }
    for (const session of sessions) {
      const item = el("li");
      const button = el("button", "session-item");
      button.type = "button";
      button.dataset.sessionId = session.session_id;
      if (session.session_id === state.sessionId) button.classList.add("current");
      button.append(el("span", "session-id", session.session_id));
      button.append(el("span", `badge ${session.status}`, statusLabel(session.status)));
      button.append(el("span", "muted small", [session.model, when(session.started_at)]
        .filter(Boolean).join(" · ")));
      button.addEventListener("click", () => openSession(session.session_id).catch(report));
      item.append(button);
      list.append(item);
    }
    $("no-sessions").hidden = sessions.length > 0;
  }

  async function loadTools() {
    const { tools } = await request("GET", "v1/tools");
    state.tools = tools;
    const box = $("tool-choices");
    for (const old of box.querySelectorAll(".tool-choice")) old.remove();
    $("no-tools").hidden = tools.length > 0;
    for (const tool of tools) {
      const label = el("label", "tool-choice");
      const box2 = el("input");
      box2.type = "checkbox";
      box2.value = tool.name;
      box2.name = "tools";
      label.title = tool.description;
      label.append(box2, el("code", "", tool.name));
      if (tool.needs_approval) label.append(el("span", "muted small", " asks first"));
      box.append(label);
    }
  }

  async function startSession(event) {
    event.preventDefault();
    const body = {
      tools: Array.from(document.querySelectorAll("#tool-choices input:checked"), (i) => i.value),
    };
    const prompt = $("system-prompt").value.trim();
    const model = $("model").value.trim();
    if (prompt) body.system_prompt = prompt;
    if (model) body.model = model;
    $("start-session").disabled = true;
    try {
      const created = await request("POST", "v1/sessions", body);
      hideBanner();
      await openSession(created.session_id, created.temporal_ui_url);
      $("message-input").focus();
      await loadSessions();
    } catch (err) {
      report(err);
    } finally {
      $("start-session").disabled = false;
    }
  }

  async function openSession(sessionId, temporalUrl) {
    const view = ++state.view;
    state.streaming?.abort(); // the reply goes on; it will be in the history
    state.streaming = null;
    $("send").disabled = true; // until the history is on the page
    state.sessionId = sessionId;
    state.status = null;
    turnViews.clear();
    history.replaceState(null, "", `#session=${enc(sessionId)}`);
    $("messages").replaceChildren();
    hideNotice();
    $("empty-chat").hidden = true;
    $("session-view").hidden = false;
    $("session-title").textContent = sessionId;
    for (const b of document.querySelectorAll(".session-item")) {
      b.classList.toggle("current", b.dataset.sessionId === sessionId);
    }
    setTemporalLink(temporalUrl);
    if (!temporalUrl) {
      request("GET", `chat/links/${enc(sessionId)}`)
        .then((links) => view === state.view && setTemporalLink(links.temporal_ui_url))
        .catch(() => {});
    }
    const [status, messages] = await Promise.all([
      refreshStatus(sessionId),
      allMessages(sessionId),
    ]);
    if (view !== state.view) return;
    drawHistory(messages);
    scrollDown();
    setSending(false);
    if (status && CLOSED_STATES.has(status.status)) {
      const why = status.status === "expired"
        ? `This session expired after ${duration(status.inactivity_timeout_seconds)} ` +
          "without a message."
        : "This session was ended.";
      showNotice(`${why} Its history is kept: send a message to resume it.`, "warning");
    }
    if (status && (LIVE_STATES.has(status.status) || status.queued > 0)) {
      attachCurrent(sessionId).catch((err) => view === state.view && report(err));
    }
  }

  // After a reload: follow the turn in progress from its start, redrawing its steps. Its
  // message id comes with `turn_started`; reconnects use it.
  async function attachCurrent(sessionId) {
    const first = (signal) =>
      fetch(`v1/sessions/${enc(sessionId)}/stream`, {
        headers: headers({ Accept: "text/event-stream" }),
        cache: "no-store",
        signal,
      });
    try {
      await followTurn(sessionId, null, first, null, true);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) throw err;
      // It finished between the status and the attach: its end is in the history.
      const messages = await allMessages(sessionId);
      if (state.sessionId === sessionId) drawHistory(messages);
    }
  }

  async function refreshStatus(sessionId) {
    try {
      const status = await request("GET", `v1/sessions/${enc(sessionId)}`);
      if (state.sessionId !== sessionId) return status;
      state.status = status;
      drawStatus(status);
      return status;
    } catch (err) {
      if (state.sessionId === sessionId) report(err);
      return null;
    }
  }

  function drawStatus(status) {
    const badge = $("session-status");
    badge.textContent = statusLabel(status.status);
    badge.className = `badge ${status.status}`;
    $("session-model").textContent = status.model;
    $("session-tools").textContent = status.tools.length ? status.tools.join(", ") : "none";
    $("session-usage").textContent = usageText(status.usage);
    // Approvals waiting (maybe asked before this page was opened) get their buttons.
    for (const pending of status.pending_approvals || []) {
      const view = turnViews.get(String(pending.turn));
      const card = view?.calls.get(pending.call_id);
      if (card && !card.dataset.approval) view.setApproval(card, "pending");
    }
    const item = document.querySelector(
      `.session-item[data-session-id="${CSS.escape(status.session_id)}"] .badge`,
    );
    if (item) {
      item.textContent = statusLabel(status.status);
      item.className = `badge ${status.status}`;
    }
  }

  function setTemporalLink(url) {
    const link = $("temporal-link");
    if (url && /^https?:\/\//i.test(url)) {
      link.href = url;
      link.hidden = false;
    } else {
      link.removeAttribute("href");
      link.hidden = !url;
    }
  }

  function showNotice(text, kind) {
    const notice = $("session-notice");
    notice.textContent = text;
    notice.className = `notice ${kind}`;
    notice.hidden = false;
  }

  function hideNotice() {
    $("session-notice").hidden = true;
  }

  // ---- export (client-side: the gateway has no export endpoint yet) -------------------------

  function download(name, type, text) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const link = el("a");
    link.href = url;
    link.download = name;
    link.hidden = true;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  }

  function fence(text) {
    const longest = Math.max(2, ...Array.from(String(text).matchAll(/`+/g), (m) => m[0].length));
    const ticks = "`".repeat(longest + 1);
    return `${ticks}\n${text}\n${ticks}`;
  }

  function toMarkdown(status, messages, temporalUrl) {
    const lines = [`# Chat session ${status.session_id}`, ""];
    lines.push(`- Model: ${status.model}`);
    lines.push(`- Status: ${status.status}`);
    lines.push(`- Created: ${status.created_at}`);
    lines.push(`- Tools: ${status.tools.length ? status.tools.join(", ") : "none"}`);
    lines.push(`- Tokens: ${usageText(status.usage)}`);
    if (temporalUrl) lines.push(`- Temporal UI: ${temporalUrl}`);
    lines.push("");
    if (status.system_prompt) lines.push("## System prompt", "", status.system_prompt, "");
    for (const m of messages) {
      if (m.role === "user") {
        lines.push(`## You (${m.created_at})`, "", m.content, "");
      } else if (m.role === "assistant") {
        lines.push(`## Assistant (${m.created_at})`, "");
        if (m.content) lines.push(m.content, "");
        for (const call of m.tool_calls || []) {
          const approval = call.approval ? ` (${call.approval.replace("_", " ")})` : "";
          lines.push(`Tool call \`${call.name}\`${approval}:`, "", fence(prettyArguments(call.arguments)), "");
        }
        if (m.error) lines.push(`**Error:** ${m.error}`, "");
        if (m.usage) lines.push(`_${m.model ?? ""} · ${usageText(m.usage)}_`, "");
      } else if (m.role === "tool") {
        const what = m.is_error ? "Tool error" : "Tool result";
        lines.push(`### ${what}: \`${m.tool_name ?? ""}\``, "", fence(m.content), "");
      }
    }
    return lines.join("\n");
  }

  async function exportSession(format) {
    const sessionId = state.sessionId;
    try {
      const [status, messages] = await Promise.all([
        request("GET", `v1/sessions/${enc(sessionId)}`),
        allMessages(sessionId),
      ]);
      const temporalUrl = $("temporal-link").getAttribute("href");
      if (format === "json") {
        const doc = {
          exported_at: new Date().toISOString(),
          session: status,
          temporal_ui_url: temporalUrl,
          messages,
        };
        download(`session-${sessionId}.json`, "application/json",
          JSON.stringify(doc, null, 2) + "\n");
      } else {
        download(`session-${sessionId}.md`, "text/markdown",
          toMarkdown(status, messages, temporalUrl));
      }
    } catch (err) {
      report(err);
    }
  }

  // ---- sign in and out ------------------------------------------------------------------

  async function signIn(key) {
    // Any authenticated call proves the key; the session list is needed anyway.
    const view = state.view;
    const { sessions } = await request("GET", "v1/sessions?limit=100", undefined, key);
    if (view !== state.view) return; // signed out meanwhile
    state.key = key;
    sessionStorage.setItem(KEY_STORAGE, key);
    $("sign-in").hidden = true;
    $("app").hidden = false;
    $("sign-out").hidden = false;
    $("whoami").textContent = "Signed in";
    drawSessions(sessions);
    loadTools().catch(report);
    const wanted = /^#session=(.+)$/.exec(location.hash);
    if (wanted) await openSession(decodeURIComponent(wanted[1])).catch(report);
  }

  function signOut(message) {
    state.streaming?.abort();
    state.streaming = null;
    state.key = null;
    state.sessionId = null;
    state.view++;
    sessionStorage.removeItem(KEY_STORAGE);
    $("app").hidden = true;
    $("sign-out").hidden = true;
    $("whoami").textContent = "";
    $("session-view").hidden = true;
    $("empty-chat").hidden = false;
    $("messages").replaceChildren();
    $("session-list").replaceChildren();
    hideBanner();
    $("sign-in").hidden = false;
    const error = $("sign-in-error");
    error.textContent = message || "";
    error.hidden = !message;
    $("api-key").value = "";
    $("api-key").focus();
  }

  async function submitSignIn(event) {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return;
    $("sign-in-button").disabled = true;
    $("sign-in-error").hidden = true;
    try {
      await signIn(key);
      $("api-key").value = "";
    } catch (err) {
      $("sign-in-error").textContent = explain(err);
      $("sign-in-error").hidden = false;
    } finally {
      $("sign-in-button").disabled = false;
    }
  }

  // ---- wiring -----------------------------------------------------------------------------

  function submitMessage(event) {
    event.preventDefault();
    const input = $("message-input");
    const content = input.value;
    if (!content.trim() || !state.sessionId || $("send").disabled) return;
    input.value = "";
    hideBanner();
    sendMessage(content);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", submitSignIn);
    $("sign-out").addEventListener("click", () => signOut());
    $("banner-close").addEventListener("click", hideBanner);
    $("new-session-form").addEventListener("submit", startSession);
    $("refresh-sessions").addEventListener("click", () => loadSessions().catch(report));
    $("composer").addEventListener("submit", submitMessage);
    $("message-input").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) submitMessage(event);
    });
    $("export-json").addEventListener("click", () => exportSession("json"));
    $("export-md").addEventListener("click", () => exportSession("markdown"));
    const saved = sessionStorage.getItem(KEY_STORAGE);
    if (saved) {
      signIn(saved).catch((err) => signOut(explain(err)));
    } else {
      signOut();
    }
  });
})();
