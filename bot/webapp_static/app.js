// The members' page (pondbot F15). Plain script, no build step, nothing loaded from
// elsewhere. Who the member is comes from Telegram's initData: from telegram-web-app.js
// when the client loaded it, else from the launch URL's #tgWebAppData= (which is where
// that script reads it too). Every API call sends it in X-Telegram-Init-Data.
"use strict";

const WORDS = {
  zh: {
    points: "积分", tier: "等级", streak: "连续签到", rank: "排名", calendar: "本月签到",
    shop: "积分商城", history: "积分明细", more: "加载更多", no_items: "暂无可兑换的商品",
    no_history: "还没有积分记录", redeem: "兑换", stock: "剩余 {n}", limit: "每人限 {n}",
    cash: "+ ¥{yuan}", days: "{n} 天", member: "会员", none: "—",
    confirm: "用 {price} 积分兑换「{name}」？",
    redeemed: "兑换成功：{name}", code: "兑换码：", code_dm: "兑换码也已私信发送给你。",
    code_wait: "私聊机器人发送 /start 即可收到兑换码。", goods: "实物商品，店家会联系你交付。",
    discount: "{d}折", mine: "我的兑换", no_mine: "还没有兑换或抽奖记录", draw: "抽奖：{name}",
    free: "免费", cost: "{n} 积分", via_draw: "抽奖所得",
    states: {
      undelivered: "兑换码待领取：私聊机器人发送 /start", sending: "兑换码正在私信发送",
      delivered: "兑换码已私信发送",
      pending: "待交付", fulfilled: "已交付", refunded: "已退款",
      won_item: "中奖", won_points: "中奖 {n} 积分", no_prize: "未中奖",
    },
    weekdays: ["一", "二", "三", "四", "五", "六", "日"],
    errors: {
      unauthorized: "身份验证失败，请从 Telegram 里的 /me 按钮重新打开本页。",
      not_enough_points: "积分不足：你有 {balance}，需要 {needed}。",
      sold_out: "已兑完。", off_sale: "该商品已下架。", not_yet: "该商品还未开售。",
      ended: "该商品已停售。", limit: "已达每人限兑 {limit} 件。", unknown_item: "没有这个商品。",
      no_points: "你还没有积分。", unknown_pond: "你不在这个鱼塘里。",
      network: "网络出错了，请稍后再试。", too_many_requests: "操作太频繁，请 {retry_after} 秒后再试。",
      other: "出错了（{code}）。",
    },
    kinds: {
      checkin: "签到", streak_bonus: "连签奖励", guess_price: "猜价格", vote: "投票",
      survey: "问卷", red_packet: "红包", red_packet_refund: "红包退回", lottery: "抽奖",
      redeem: "兑换", refund: "退款", referral: "邀请奖励", birthday: "生日礼",
      purchase: "购物", task_bonus: "任务奖励", admin_adjust: "管理员调整", expire: "积分过期",
    },
  },
  en: {
    points: "points", tier: "Tier", streak: "Streak", rank: "Rank", calendar: "Check-ins",
    shop: "Shop", history: "Points history", more: "Load more", no_items: "Nothing on sale",
    no_history: "No points yet", redeem: "Redeem", stock: "{n} left", limit: "{n} per member",
    cash: "+ ¥{yuan}", days: "{n} days", member: "member", none: "—",
    confirm: "Redeem “{name}” for {price} points?",
    redeemed: "Redeemed: {name}", code: "Code: ", code_dm: "The code is in your private chat too.",
    code_wait: "Send /start to the bot privately to get the code there.",
    goods: "Goods: the shop will contact you to hand it over.",
    discount: "{d}折 (pay {p}%)", mine: "My coupons", no_mine: "No redemptions or draws yet",
    draw: "Draw: {name}", free: "free", cost: "{n} points", via_draw: "a prize",
    states: {
      undelivered: "code waiting: /start the bot privately", sending: "code on its way to your DM",
      delivered: "code sent",
      pending: "to be handed over", fulfilled: "handed over", refunded: "refunded",
      won_item: "won", won_points: "won {n} points", no_prize: "no prize",
    },
    weekdays: ["Mo", "Tu", "We", "Th", "Fr", "Sa", "Su"],
    errors: {
      unauthorized: "Could not verify you: open this page again with the /me button in Telegram.",
      not_enough_points: "Not enough points: you have {balance}, it needs {needed}.",
      sold_out: "Sold out.", off_sale: "Off sale.", not_yet: "Not on sale yet.",
      ended: "No longer on sale.", limit: "Limit reached: {limit} per member.",
      unknown_item: "No such item.", no_points: "You have no points yet.",
      unknown_pond: "You are not in this pond.", network: "Network error, try again later.",
      too_many_requests: "Too many requests: try again in {retry_after} s.",
      other: "Something went wrong ({code}).",
    },
    kinds: {
      checkin: "Check-in", streak_bonus: "Streak bonus", guess_price: "Guess the price",
      vote: "Vote", survey: "Survey", red_packet: "Red packet", red_packet_refund: "Red packet back",
      lottery: "Lucky draw", redeem: "Redeemed", refund: "Refund", referral: "Invite",
      birthday: "Birthday", purchase: "Purchase", task_bonus: "Tasks bonus",
      admin_adjust: "Adjusted", expire: "Expired",
    },
  },
};

const tg = window.Telegram && window.Telegram.WebApp;
const launch = new URLSearchParams(location.hash.slice(1));
const initData = (tg && tg.initData) || launch.get("tgWebAppData") || "";

// Without telegram-web-app.js: the client's colours from the launch parameters, and the
// two events the page sends (ready, expand) the way that script posts them.
function applyTheme() {
  try {
    const theme = JSON.parse(launch.get("tgWebAppThemeParams") || "{}");
    for (const [key, value] of Object.entries(theme)) {
      if (/^#[0-9a-f]{3,8}$/i.test(String(value))) {
        document.documentElement.style.setProperty("--tg-theme-" + key.replace(/_/g, "-"), value);
      }
    }
  } catch (e) { /* no theme: the page's own colours */ }
}

function postEvent(type) {
  if (tg) return type === "web_app_ready" ? tg.ready() : tg.expand();
  const data = JSON.stringify({ eventType: type, eventData: {} });
  if (window.TelegramWebviewProxy) window.TelegramWebviewProxy.postEvent(type, "{}");
  else if (window.parent !== window) window.parent.postMessage(data, "https://web.telegram.org");
}
const query = new URLSearchParams(location.search);
let chat = query.get("chat") || "";
let lang = guessLanguage();
let W = WORDS[lang];

function guessLanguage() {
  try {
    const user = JSON.parse(new URLSearchParams(initData).get("user") || "{}");
    const code = user.language_code || navigator.language || "zh";
    return code.toLowerCase().startsWith("zh") ? "zh" : "en";
  } catch (e) {
    return "zh";
  }
}

function fmt(text, values) {
  return text.replace(/\{(\w+)\}/g, (m, k) => (values && k in values ? String(values[k]) : m));
}

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body.error || String(status));
    this.status = status;
    this.body = body;
  }
}

async function api(path, params, body) {
  const search = new URLSearchParams(params || {});
  if (chat) search.set("chat", chat);
  const url = "/app/api/" + path + (search.toString() ? "?" + search : "");
  let response;
  try {
    response = await fetch(url, {
      method: body ? "POST" : "GET",
      headers: Object.assign({ "X-Telegram-Init-Data": initData },
        body ? { "Content-Type": "application/json" } : {}),
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch (e) {
    throw new ApiError(0, { error: "network" });
  }
  let data = {};
  try { data = await response.json(); } catch (e) { data = { error: "other" }; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function errorText(err) {
  const body = (err && err.body) || { error: "network" };
  const text = W.errors[body.error] || W.errors.other;
  return fmt(text, Object.assign({ code: body.error }, body));
}

function translate() {
  document.documentElement.lang = lang;
  for (const node of document.querySelectorAll("[data-t]")) node.textContent = W[node.dataset.t];
}

function showFatal(err) {
  $("loading").hidden = true;
  $("page").hidden = true;
  const box = $("error");
  box.textContent = errorText(err);
  box.hidden = false;
}

// "9.8" (折, tenths of the price) -> "98": shifted as text, so no float rounding shows.
function percentOf(discount) {
  const [whole, tenths = ""] = String(discount).split(".");
  const digits = whole + (tenths[0] || "0") + (tenths.length > 1 ? "." + tenths.slice(1) : "");
  return String(Number(digits));
}

function renderMe(me) {
  $("name").textContent = me.name || "";
  $("balance").textContent = me.balance;
  $("tier").textContent = me.tier === "member" ? W.member : me.tier;
  const discount = $("discount");
  discount.textContent = me.discount ? fmt(W.discount, { d: me.discount, p: percentOf(me.discount) }) : "";
  discount.hidden = !me.discount;
  $("streak").textContent = fmt(W.days, { n: me.streak });
  $("rank").textContent = me.rank ? "#" + me.rank : W.none;
  const select = $("pond");
  select.replaceChildren();
  for (const p of me.ponds) {
    const option = el("option", p.title || String(p.chat_id));
    option.value = String(p.chat_id);
    option.selected = p.chat_id === me.chat_id;
    select.append(option);
  }
  select.hidden = me.ponds.length < 2;
}

function renderCalendar(cal) {
  $("month").textContent = cal.month;
  const grid = $("calendar");
  grid.replaceChildren(...W.weekdays.map((d) => el("span", d, "head")));
  const [year, month] = cal.month.split("-").map(Number);
  const first = new Date(Date.UTC(year, month - 1, 1));
  const days = new Date(Date.UTC(year, month, 0)).getUTCDate();
  for (let i = 0; i < (first.getUTCDay() + 6) % 7; i++) grid.append(el("span", ""));
  const done = new Set(cal.days), makeup = new Set(cal.makeup);
  const today = cal.today.startsWith(cal.month) ? Number(cal.today.slice(8)) : 0;
  for (let d = 1; d <= days; d++) {
    const cls = [done.has(d) ? "done" : makeup.has(d) ? "makeup" : "", d === today ? "today" : ""];
    grid.append(el("span", d, cls.join(" ").trim()));
  }
}

function renderShop(shop) {
  const list = $("items");
  list.replaceChildren();
  for (const item of shop.items) {
    const li = el("li");
    li.dataset.item = item.id;
    const what = el("div", null, "what");
    what.append(el("span", "#" + item.id + " " + item.name));
    const notes = [item.price + " " + W.points];
    if (item.cash_cents) notes.push(fmt(W.cash, { yuan: (item.cash_cents / 100).toFixed(2) }));
    notes.push(fmt(W.stock, { n: item.stock }));
    if (item.limit) notes.push(fmt(W.limit, { n: item.limit }));
    what.append(el("small", notes.join(" · ")));
    const button = el("button", W.redeem);
    button.disabled = item.stock <= 0;
    button.addEventListener("click", () => redeem(item, button));
    li.append(what, button);
    list.append(li);
  }
  $("no-items").hidden = shop.items.length > 0;
}

function requestId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function redeem(item, button) {
  const question = fmt(W.confirm, { name: item.name, price: item.price });
  if (tg && tg.showConfirm) {
    const ok = await new Promise((resolve) => tg.showConfirm(question, resolve));
    if (!ok) return;
  } else if (!window.confirm(question)) {
    return;
  }
  button.disabled = true;
  const box = $("result");
  box.replaceChildren();
  box.className = "result";
  const request = { item_id: item.id, request_id: requestId() };
  try {
    const r = await api("redeem", null, request);
    box.append(el("div", fmt(W.redeemed, { name: r.item_name })));
    if (r.code) {
      const line = el("div", W.code);
      line.append(el("code", r.code));
      box.append(line, el("small", r.code_sent ? W.code_dm : W.code_wait));
    } else {
      box.append(el("small", W.goods));
    }
    $("balance").textContent = r.balance;
    await Promise.all([loadShop(), loadHistory(true), loadMine(true)]);
  } catch (err) {
    box.className = "result bad";
    box.textContent = errorText(err);
    if (err.status === 401) return showFatal(err);
    button.disabled = false;
  }
  box.hidden = false;
}

let nextBefore = null;

function renderHistory(page, fresh) {
  const list = $("history");
  if (fresh) list.replaceChildren();
  for (const e of page.entries) {
    const li = el("li");
    const what = el("div");
    what.append(el("span", W.kinds[e.kind] || e.kind));
    what.append(el("small", when(e.created_at)));
    li.append(what, el("span", (e.delta > 0 ? "+" : "") + e.delta, e.delta > 0 ? "plus" : "minus"));
    list.append(li);
  }
  nextBefore = page.next;
  $("more").hidden = !page.next;
  $("no-history").hidden = list.children.length > 0;
}

async function loadHistory(fresh) {
  const page = await api("history", fresh || !nextBefore ? null : { before: nextBefore });
  renderHistory(page, fresh);
}

let nextMine = null;

function when(at) {
  return new Date(at).toLocaleString(lang === "zh" ? "zh-CN" : "en");
}

// "My coupons": what /mine lists — redemptions (with the code, the member's own) and draws.
function renderMine(page, fresh) {
  const list = $("mine");
  if (fresh) list.replaceChildren();
  for (const e of page.entries) {
    const li = el("li", null, e.status);
    li.dataset.mine = e.type + ":" + e.id;
    const what = el("div", null, "what");
    const notes = [when(e.created_at)];
    if (e.type === "draw") {
      what.append(el("span", "🎰 " + fmt(W.draw, { name: e.name || W.states.no_prize })));
      notes.push(e.cost ? fmt(W.cost, { n: e.cost }) : W.free);
      notes.push(fmt(W.states[e.status] || e.status, { n: e.won_points }));
    } else {
      what.append(el("span", "#" + e.id + " " + e.name));
      const state = e.status === "undelivered" && e.dm_linked ? "sending" : e.status;
      notes.push(W.states[state] || e.status);
      if (e.via_draw) notes.push(W.via_draw);
    }
    what.append(el("small", notes.join(" · ")));
    li.append(what);
    if (e.code) li.append(el("code", e.code));
    list.append(li);
  }
  nextMine = page.next;
  $("mine-more").hidden = !page.next;
  $("no-mine").hidden = list.children.length > 0;
}

async function loadMine(fresh) {
  const page = await api("mine", fresh || !nextMine ? null : { before: nextMine });
  renderMine(page, fresh);
}

async function loadShop() {
  renderShop(await api("shop"));
}

async function load() {
  const me = await api("me");
  if (me.lang && WORDS[me.lang] && me.lang !== lang) {
    lang = me.lang;
    W = WORDS[lang];
  }
  translate();
  renderMe(me);
  const [cal] = await Promise.all([api("calendar"), loadShop(), loadHistory(true), loadMine(true)]);
  renderCalendar(cal);
  $("loading").hidden = true;
  $("page").hidden = false;
  document.body.dataset.ready = "1";
}

function start() {
  applyTheme();
  postEvent("web_app_ready");
  postEvent("web_app_expand");
  translate();
  $("more").addEventListener("click", () => loadHistory(false).catch(showFatal));
  $("mine-more").addEventListener("click", () => loadMine(false).catch(showFatal));
  $("pond").addEventListener("change", (event) => {
    chat = event.target.value;
    $("result").hidden = true;
    load().catch(showFatal);
  });
  load().catch((err) => {
    showFatal(err);
    document.body.dataset.ready = "error";
  });
}

start();
