// The demo page: each panel follows one stream over one protocol and shows what arrives.
"use strict";

const HISTORY_LENGTH = 12;
const RAW_BACKOFF_MIN_MS = 500;
const RAW_BACKOFF_MAX_MS = 10000;

// Renders one panel and returns the callbacks a connection reports to.
function panelView(element, title, endpoint) {
  element.append(document.getElementById("panel-template").content.cloneNode(true));
  element.querySelector(".protocol").textContent = title;
  element.querySelector(".parity").textContent = element.dataset.parity;
  element.querySelector(".endpoint").textContent = endpoint;
  const state = element.querySelector(".state");
  const latest = element.querySelector(".latest");
  const received = element.querySelector(".received");
  const gaps = element.querySelector(".gaps");
  const history = element.querySelector(".history");
  let count = 0;
  let gapCount = 0;
  let last = null;
  return {
    button: element.querySelector(".toggle"),
    // The last integer shown, to resume after on reconnect; null before the first.
    last: () => last,
    setState(name, detail) {
      state.dataset.state = name;
      state.textContent = detail ? `${name} (${detail})` : name;
    },
    integer(value) {
      // A stream steps by exactly 2; anything else is a gap the user should see.
      if (last !== null && value !== last + 2) {
        gapCount += 1;
        gaps.textContent = String(gapCount);
        element.classList.add("gaps-seen");
      }
      last = value;
      count += 1;
      latest.textContent = String(value);
      received.textContent = String(count);
      const item = document.createElement("li");
      item.textContent = String(value);
      history.prepend(item);
      while (history.children.length > HISTORY_LENGTH) history.lastElementChild.remove();
      element.dataset.last = String(value);
      element.dataset.received = String(count);
    },
  };
}

// socket.io: the official client reconnects by itself, and `auth` as a function is asked
// again at every reconnect, so each one resumes after the last integer shown.
function socketIoPanel(element) {
  const parity = element.dataset.parity;
  const view = panelView(element, "socket.io", `io("/${parity}")`);
  const socket = io(`/${parity}`, {
    auth: (send) => send(view.last() === null ? {} : { after: view.last() }),
  });
  socket.on("connect", () => view.setState("connected", socket.io.engine.transport.name));
  socket.io.engine?.on?.("upgrade", () =>
    view.setState("connected", socket.io.engine.transport.name),
  );
  socket.io.on("reconnect_attempt", (attempt) =>
    view.setState("reconnecting", `attempt ${attempt}`),
  );
  socket.on("disconnect", (reason) => {
    // The server disconnects a client too slow to keep up; the client does not come back on
    // its own after a server disconnect, so ask again, resuming where it stopped.
    if (reason === "io server disconnect" && view.button.textContent === "Disconnect") {
      view.setState("reconnecting", reason);
      setTimeout(() => socket.connect(), RAW_BACKOFF_MIN_MS);
      return;
    }
    view.setState(socket.active ? "reconnecting" : "disconnected", reason);
  });
  socket.on("connect_error", (error) => view.setState("reconnecting", error.message));
  socket.on("integer", (value) => view.integer(value));
  view.button.addEventListener("click", () => {
    if (socket.connected || socket.active) {
      socket.disconnect();
      view.button.textContent = "Connect";
    } else {
      socket.connect();
      view.button.textContent = "Disconnect";
    }
  });
}

// Raw WebSocket: reconnects with capped exponential backoff and jitter until disconnected by
// hand, resuming with ?after= the last integer shown.
function rawPanel(element) {
  const parity = element.dataset.parity;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const base = `${scheme}//${location.host}/_ws/`;
  const view = panelView(element, "raw WebSocket", `${base}${parity === "even" ? "?even" : ""}`);
  const url = () => {
    const query = [
      parity === "even" ? "even" : null,
      view.last() === null ? null : `after=${view.last()}`,
    ];
    const joined = query.filter(Boolean).join("&");
    return joined ? `${base}?${joined}` : base;
  };
  let socket = null;
  let wanted = true;
  let failures = 0;
  let retryTimer = null;

  function open() {
    socket = new WebSocket(url());
    socket.addEventListener("open", () => {
      failures = 0;
      view.setState("connected");
    });
    socket.addEventListener("message", (event) => view.integer(Number(event.data)));
    socket.addEventListener("close", (event) => {
      socket = null;
      if (!wanted) {
        view.setState("disconnected");
        return;
      }
      const delay =
        Math.min(RAW_BACKOFF_MAX_MS, RAW_BACKOFF_MIN_MS * 2 ** failures) *
        (0.5 + Math.random() / 2);
      failures += 1;
      view.setState("reconnecting", `code ${event.code}, retry in ${(delay / 1000).toFixed(1)} s`);
      retryTimer = setTimeout(open, delay);
    });
  }

  view.button.addEventListener("click", () => {
    wanted = !wanted;
    view.button.textContent = wanted ? "Disconnect" : "Connect";
    clearTimeout(retryTimer);
    if (wanted) {
      failures = 0;
      view.setState("connecting");
      open();
    } else if (socket) {
      socket.close(1000, "closed by the user");
    } else {
      view.setState("disconnected");
    }
  });
  open();
}

for (const element of document.querySelectorAll(".panel")) {
  if (element.dataset.protocol === "socketio") socketIoPanel(element);
  else rawPanel(element);
}
