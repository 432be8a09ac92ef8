// pondbot sandbox: play the demo pond as any of its people. Plain script, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
let state = null;
let me = null;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

async function call(path, body) {
  const r = await fetch(path, body ? {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  } : {});
  if (!r.ok) throw new Error(await r.text());
  return r.json();
}

function chatOf(target) { return target === "pond" ? state.pond : me; }

async function drawChat(target) {
  const chatId = chatOf(target);
  const { messages } = await call("/api/chat/" + chatId);
  const box = $(target);
  const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  box.replaceChildren();
  for (const m of messages) {
    const node = el("div", null, "msg" + (m.is_bot ? " bot" : "") + (m.from_id === me ? " me" : ""));
    node.dataset.id = m.message_id;
    node.append(el("span", m.from_name, "who"), document.createTextNode(m.text));
    if (m.edited) node.append(el("span", "edited", "edited"));
    if (m.buttons.length) {
      const rows = el("div", null, "buttons");
      for (const row of m.buttons) {
        const line = el("div");
        for (const b of row) {
          if (b.data) {
            const button = el("button", b.text);
            button.addEventListener("click", () => call("/api/click", {
              chat_id: chatId, user_id: me, message_id: m.message_id, data: b.data,
            }).catch(alert));
            line.append(button);
          } else if (b.url) {
            const a = el("a", b.text);
            a.href = b.url; a.target = "_blank"; a.rel = "noopener";
            line.append(a);
          } else {
            line.append(el("button", b.text));
          }
        }
        rows.append(line);
      }
      node.append(rows);
    }
    box.append(node);
  }
  if (atEnd) box.scrollTop = box.scrollHeight;
}

const pending = new Set();
function redraw(target) {
  if (pending.has(target)) return;
  pending.add(target);
  setTimeout(() => { pending.delete(target); drawChat(target).catch(() => {}); }, 120);
}

let toastTimer = null;
function toast(text) {
  const box = $("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, 2500);
}

function meter(m) {
  $("meter-text").textContent = m.last_minute + "/" + m.limit + " per min" + (m.refused ? " · " + m.refused + "×429" : "");
  $("meter-bar").style.width = Math.min(100, (100 * m.last_minute) / m.limit) + "%";
}

function drawPeople() {
  const who = $("who");
  const chosen = who.value || String(me);
  who.replaceChildren();
  for (const p of state.people) {
    const option = el("option", p.name + (p.role === "operator" ? " (operator)" : ""));
    option.value = String(p.id);
    who.append(option);
  }
  who.value = chosen;
}

async function load() {
  state = await call("/api/state");
  if (me === null) me = state.people[1].id;
  drawPeople();
  $("who").value = String(me);
  $("pond-title").textContent = state.title + " (" + state.pond + ")";
  $("dm-name").textContent = state.people.find((p) => p.id === me).name;
  meter(state.meter);
  await Promise.all([drawChat("pond"), drawChat("dm")]);
}

function listen() {
  const source = new EventSource("/api/events");
  source.onmessage = (message) => {
    const e = JSON.parse(message.data);
    if (e.kind === "meter") return meter(e);
    if (e.kind === "callback_answer" && e.user_id === me && e.text) toast(e.text);
    if (e.kind === "migrate" || e.kind === "join") load().catch(() => {});
    if (e.chat_id === state.pond) redraw("pond");
    if (e.chat_id === me) redraw("dm");
  };
}

function start() {
  $("who").addEventListener("change", (event) => { me = Number(event.target.value); load(); });
  for (const form of document.querySelectorAll("form")) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const input = form.querySelector("input");
      const text = input.value.trim();
      if (!text) return;
      input.value = "";
      call("/api/send", { chat_id: chatOf(form.dataset.target), user_id: me, text }).catch(alert);
    });
  }
  for (const button of document.querySelectorAll("[data-action]")) {
    button.addEventListener("click", () => call("/api/action/" + button.dataset.action, {}).then(load).catch(alert));
  }
  load().then(() => { listen(); document.body.dataset.ready = "1"; });
}

start();
