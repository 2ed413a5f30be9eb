// The demo app's page: lists the emojis (GET /api/list), votes on a click
// (GET /api/vote?choice=), and shows the leaderboard (GET /api/leaderboard),
// refreshed every 2 s. Elements carry stable ids and classes for tests:
// #emoji-list > button.emoji[data-shortcode], #vote-status[data-status],
// #leaderboard tr.leaderboard-row[data-shortcode] > td.votes.
"use strict";

const byId = (id) => document.getElementById(id);

async function loadList() {
  const grid = byId("emoji-list");
  const res = await fetch("/api/list");
  if (!res.ok) {
    grid.dataset.error = String(res.status);
    grid.textContent = "Could not load the emojis (" + res.status + ")";
    return;
  }
  const list = await res.json();
  grid.replaceChildren();
  for (const e of list) {
    const b = document.createElement("button");
    b.className = "emoji";
    b.dataset.shortcode = e.shortcode;
    b.title = e.shortcode;
    b.textContent = e.unicode;
    b.addEventListener("click", () => vote(e));
    grid.appendChild(b);
  }
  grid.dataset.loaded = String(list.length);
}

async function vote(e) {
  const status = byId("vote-status");
  const res = await fetch("/api/vote?choice=" + encodeURIComponent(e.shortcode));
  status.dataset.shortcode = e.shortcode;
  status.dataset.status = String(res.status);
  if (res.ok) {
    status.className = "ok";
    status.textContent = "You voted for " + e.unicode;
  } else {
    status.className = "error";
    status.textContent = "Voting for " + e.shortcode + " failed (" + res.status + "): " + (await res.text());
  }
  await loadLeaderboard();
}

async function loadLeaderboard() {
  const table = byId("leaderboard");
  const res = await fetch("/api/leaderboard");
  if (!res.ok) {
    table.dataset.error = String(res.status);
    return;
  }
  const board = await res.json();
  const rows = board.map((e) => {
    const tr = document.createElement("tr");
    tr.className = "leaderboard-row";
    tr.dataset.shortcode = e.shortcode;
    for (const [cls, text] of [["unicode", e.unicode], ["shortcode", e.shortcode], ["votes", String(e.votes)]]) {
      const td = document.createElement("td");
      td.className = cls;
      td.textContent = text;
      tr.appendChild(td);
    }
    return tr;
  });
  table.tBodies[0].replaceChildren(...rows);
  delete table.dataset.error;
  table.dataset.loaded = String(board.length);
}

window.addEventListener("DOMContentLoaded", () => {
  if (window.location.pathname === "/leaderboard") {
    byId("vote").hidden = true;
  } else {
    loadList();
  }
  loadLeaderboard();
  setInterval(loadLeaderboard, 2000);
});
