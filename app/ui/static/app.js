// Command Center: live feed over SSE, live board, periodic refresh of org chart and costs.
// Plain JS, no build step. Everything degrades to plain links and forms without it.
"use strict";

function replaceFrom(url, target) {
  // Re-fetch a server-rendered fragment and swap it in; a 401 means the session ended.
  return fetch(url, {credentials: "same-origin", headers: {"Accept": "text/html"}})
    .then(function (r) {
      if (r.status === 401) { window.location.reload(); return null; }
      return r.ok ? r.text() : null;
    })
    .then(function (html) {
      if (html !== null) { target.innerHTML = html; updateInboxCount(target); }
    })
    .catch(function () { /* next event or tick retries */ });
}

function updateInboxCount(scope) {
  // A fragment that knows the inbox count (board, inbox) keeps the navigation badge current.
  var source = scope.querySelector("[data-inbox-count]");
  var badge = document.getElementById("inbox-count");
  if (!source || !badge) { return; }
  var n = parseInt(source.dataset.inboxCount, 10) || 0;
  badge.textContent = String(n);
  badge.setAttribute("aria-label", n + " waiting");
  badge.hidden = n === 0;
}

function busy(el) {
  // Never swap a fragment under the operator's hands: focus inside it, or a comment typed.
  var active = document.activeElement;
  if (active && active !== document.body && el.contains(active)) { return true; }
  return Array.prototype.some.call(el.querySelectorAll("input[type=text], input:not([type]), textarea"),
    function (field) { return field.value !== ""; });
}

function feedItem(ev, list) {
  var li = document.createElement("li");
  li.dataset.eventId = ev.id;
  li.className = "fresh";
  var kind = document.createElement("span");
  kind.className = "kind"; kind.textContent = ev.text;
  // the title links to the task page (built with DOM calls: event text is never HTML)
  var title = document.createElement(ev.task_id ? "a" : "span");
  title.className = "title"; title.textContent = ev.title || "";
  if (ev.task_id) { title.href = list.dataset.taskBase + encodeURIComponent(ev.task_id); }
  var at = document.createElement("time");
  at.dateTime = ev.at; at.textContent = (ev.at || "").substring(11, 19);
  li.append(kind, " ", title, " ", at);
  return li;
}

function startFeed(list) {
  var board = document.getElementById("board");
  var state = document.getElementById("feed-state");
  var pending = null;
  var source = new EventSource(list.dataset.stream);
  source.onopen = function () { state.textContent = "live"; state.className = "live on"; };
  source.onerror = function () {
    // EventSource reconnects by itself and sends Last-Event-ID: nothing is lost.
    state.textContent = "reconnecting"; state.className = "live off";
  };
  source.addEventListener("session_ended", function () {
    // signed out elsewhere, expired or revoked: the server closed the stream; the reload
    // lands on the sign-in form
    source.close();
    window.location.reload();
  });
  source.addEventListener("task_event", function (msg) {
    var ev = JSON.parse(msg.data);
    if (list.querySelector('[data-event-id="' + ev.id + '"]')) { return; }
    list.prepend(feedItem(ev, list));
    while (list.children.length > 100) { list.lastElementChild.remove(); }
    if (board && !pending) {
      pending = setTimeout(function () {
        pending = null;
        if (!board.contains(document.activeElement) || document.activeElement === document.body) {
          replaceFrom(board.dataset.fragment, board);
        }
      }, 250);
    }
  });
}

function startRefresh(el) {
  var seconds = Math.max(1, parseInt(el.dataset.refresh, 10) || 5);
  setInterval(function () {
    if (!document.hidden && !busy(el)) { replaceFrom(el.dataset.fragment, el); }
  }, seconds * 1000);
}

document.addEventListener("DOMContentLoaded", function () {
  var list = document.getElementById("feed");
  if (list && window.EventSource) { startFeed(list); }
  document.querySelectorAll("[data-refresh]").forEach(startRefresh);
  // No sign-in from the URL (no #token auto-submit): a link from another site must never
  // switch this browser into the link's tenant. The operator pastes the token and presses
  // the button on our own page.
});
