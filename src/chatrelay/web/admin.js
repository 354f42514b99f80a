// chatrelay admin page: what was spent and by whom (GET /api/admin/usage, grouped by day,
// user, key and upstream), and the accounts and keys with the admin's actions on them (a
// budget, a spend limit, disabling an account, revoking a key). The server serves this page
// to administrators only; every call here is one of theirs (the session cookie).

import { barChart } from './admin-chart.js';

const $ = (id) => document.getElementById(id);
const DAY_MS = 86_400_000;
const DEFAULT_DAYS = 30;
const TOP = 10; // rows in the "top" tables
const PAGE = 200; // accounts or keys fetched at a time

const form = $('range');
const since = $('since');
const until = $('until');
const kind = $('kind');
const csvGroup = $('csv-group');
const csvLink = $('csv');
const status = $('status');
const currencySelect = $('currency');
const currencyChoice = $('currency-choice');
const usersBody = $('users').tBodies[0];
const keysBody = $('keys').tBodies[0];

/** The day rows of the last load, for redrawing the charts in another currency. */
let dayRows = [];
/** Who is using the page: their own account cannot be disabled from here. */
let me = null;
const accounts = new Map(); // id → the account as GET /api/admin/users lists it
const keys = new Map(); // id → the key as GET /api/admin/keys lists it

// ---- talking to the server ------------------------------------------------------

class AdminError extends Error {
  constructor(message, { status = 0, code = '' } = {}) {
    super(message);
    this.name = 'AdminError';
    this.status = status;
    this.code = code;
  }
}

async function call(url, { method = 'GET', body } = {}) {
  const init = { method, headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch {
    throw new AdminError('Cannot reach the chatrelay server — is it running?');
  }
  let data = null;
  try { data = await res.json(); } catch { /* not JSON: the status line says it */ }
  if (!res.ok) {
    const error = data?.error ?? {};
    if (res.status === 404 && error.code === 'not_found') {
      // What anyone but an admin is answered: the session ended or is no longer an admin's.
      throw new AdminError('Only administrators can see this: sign in as one, then reload.',
        { status: 404, code: 'not_found' });
    }
    throw new AdminError(error.message || `${res.status} ${res.statusText}`.trim(),
      { status: res.status, code: error.code ?? '' });
  }
  return data;
}

function setStatus(text, { error = false } = {}) {
  status.textContent = text;
  status.hidden = !text;
  status.dataset.kind = error ? 'error' : 'info';
}

// ---- formats --------------------------------------------------------------------

const integer = new Intl.NumberFormat();

const count = (n) => integer.format(n ?? 0);

/** Money as the server sends it (units of the currency, null: unknown): cents from one
 * unit up, four places under it, and down to nanos for the smallest (never rounded to 0). */
function money(amount, currency = '') {
  if (amount == null) return 'unknown';
  const size = Math.abs(amount);
  const text = amount.toLocaleString(undefined, {
    minimumFractionDigits: 2, maximumFractionDigits: size >= 1 ? 2 : size >= 0.01 ? 4 : 9,
  });
  return currency ? `${text} ${currency}` : text;
}

const isoDay = (time) => new Date(time).toISOString().slice(0, 10);

function daysFrom(first, last) {
  const days = [];
  const end = Date.parse(`${last}T00:00:00Z`);
  for (let t = Date.parse(`${first}T00:00:00Z`); t <= end; t += DAY_MS) days.push(isoDay(t));
  return days;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : 'never';
}

// ---- tables ---------------------------------------------------------------------

function cell(text, className = '') {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function emptyRow(body, columns, text) {
  const tr = document.createElement('tr');
  const td = cell(text, 'empty');
  td.colSpan = columns;
  tr.append(td);
  body.replaceChildren(tr);
}

function fill(table, rows, columns, build, empty = 'Nothing in this range.') {
  const body = $(table).tBodies[0];
  if (!rows.length) {
    emptyRow(body, columns, empty);
    return;
  }
  body.replaceChildren(...rows.map(build));
}

function userLabel(row) {
  if (row.username) return row.username;
  if (row.user_id == null) return 'operator (warming)';
  return `guest ${row.user_id}`;
}

/** A key's name, and the first characters of the key to tell keys apart. */
function keyCell(name, prefix) {
  const td = cell(name || '(no name)');
  const start = document.createElement('span');
  start.className = 'prefix';
  start.textContent = `${prefix}…`;
  td.append(' ', start);
  return td;
}

function keyLabel(row) {
  if (row.key_name != null) return keyCell(row.key_name, row.key_prefix);
  return cell(row.api_key_id == null ? 'no key (page, warming)' : `deleted key ${row.api_key_id}`);
}

function renderTopUsers(rows) {
  fill('top-users', rows, 5, (row) => {
    const tr = document.createElement('tr');
    tr.dataset.key = row.key;
    tr.append(
      cell(userLabel(row)),
      cell(count(row.answers), 'num'),
      cell(count(row.prompt_tokens + row.completion_tokens), 'num'),
      cell(money(row.paid, row.currency), 'num'),
      cell(money(row.used, row.currency), 'num'),
    );
    return tr;
  });
}

function renderTopKeys(rows) {
  fill('top-keys', rows, 5, (row) => {
    const tr = document.createElement('tr');
    tr.dataset.key = row.key;
    tr.append(
      keyLabel(row),
      cell(row.username ?? ''),
      cell(count(row.answers), 'num'),
      cell(money(row.paid, row.currency), 'num'),
      cell(money(row.used, row.currency), 'num'),
    );
    return tr;
  });
}

/** What was paid per thousand tokens generated: what each useful token cost. */
function perThousand(row) {
  if (row.paid == null || !row.completion_tokens) return null;
  return (row.paid / row.completion_tokens) * 1000;
}

function renderUpstreams(rows) {
  fill('upstreams', rows, 10, (row) => {
    const tr = document.createElement('tr');
    tr.dataset.key = row.key;
    tr.append(
      cell(row.upstream),
      cell(count(row.answers), 'num'),
      cell(count(row.attempts), 'num'),
      cell(count(row.paid_tokens), 'num'),
      cell(count(row.completion_tokens), 'num'),
      cell(money(row.paid, row.currency), 'num'),
      cell(money(row.used, row.currency), 'num'),
      cell(money(row.difference, row.currency), 'num'),
      cell(money(perThousand(row), row.currency), 'num'),
      cell(count(row.unpriced_attempts), 'num'),
    );
    return tr;
  });
}

const percent = (share) => `${(share * 100).toLocaleString(undefined, { maximumFractionDigits: 1 })} %`;
const ms = (value) => (value == null ? '—' : `${count(Math.round(value))} ms`);

function renderPerformance(body) {
  const hours = Math.round(body.window_seconds / 3600);
  $('performance-window').textContent = `From the answers of the last ${
    hours >= 1 ? `${count(hours)} h` : `${count(body.window_seconds)} s`
  } (CHATRELAY_FIGURES_WINDOW), whatever the range above.`;
  fill('performance', body.data, 10, (row) => {
    const tr = document.createElement('tr');
    tr.dataset.key = `${row.upstream} ${row.model}`;
    tr.append(
      cell(row.upstream),
      cell(row.model),
      cell(count(row.answers), 'num'),
      cell(`${ms(row.ttft_p50_ms)} / ${ms(row.ttft_p95_ms)}`, 'num'),
      cell(row.tokens_per_s == null ? '—' : count(row.tokens_per_s), 'num'),
      cell(percent(row.stall_rate), 'num'),
      cell(percent(row.cut_rate), 'num'),
      cell(percent(row.failover_rate), 'num'),
      cell(`${count(row.paid_tokens)} / ${count(row.used_tokens)}`, 'num'),
      cell(money(row.cost_per_1k_useful, row.currency), 'num'),
    );
    return tr;
  }, 'No answers in this window.');
}

async function loadPerformance() {
  renderPerformance(await call('/api/admin/upstreams'));
}

// ---- totals and charts ----------------------------------------------------------

function sum(rows, field) {
  return rows.reduce((total, row) => total + (row[field] ?? 0), 0);
}

/** Paid, used and their difference, or null (unknown) where every row is unpriced. */
function moneySum(rows, field) {
  const known = rows.filter((row) => row[field] != null);
  return known.length ? sum(known, field) : null;
}

function figure(label, value, testid) {
  const box = document.createElement('div');
  box.className = 'figure';
  box.dataset.testid = testid;
  const dt = document.createElement('p');
  dt.className = 'figure-label';
  dt.textContent = label;
  const dd = document.createElement('p');
  dd.className = 'figure-value';
  dd.textContent = value;
  box.append(dt, dd);
  return box;
}

function currencies(rows) {
  return [...new Set(rows.map((row) => row.currency))].sort();
}

function renderTotals(rows) {
  const boxes = [
    figure('Answers', count(sum(rows, 'answers')), 'total-answers'),
    figure('Attempts', count(sum(rows, 'attempts')), 'total-attempts'),
    figure('Tokens paid for', count(sum(rows, 'paid_tokens')), 'total-paid-tokens'),
    figure('Tokens generated', count(sum(rows, 'completion_tokens')), 'total-generated'),
  ];
  for (const currency of currencies(rows)) {
    const mine = rows.filter((row) => row.currency === currency);
    boxes.push(
      figure(`Paid (${currency})`, money(moneySum(mine, 'paid'), currency), `total-paid-${currency}`),
      figure(`Used (${currency})`, money(moneySum(mine, 'used'), currency), `total-used-${currency}`),
      figure(`Difference (${currency})`, money(moneySum(mine, 'difference'), currency),
        `total-difference-${currency}`),
    );
  }
  $('totals').replaceChildren(...boxes);
  const unpriced = sum(rows, 'unpriced_attempts');
  const note = $('unpriced-note');
  note.hidden = unpriced === 0;
  note.textContent = `${count(unpriced)} attempt${unpriced === 1 ? '' : 's'} had no price: `
    + 'their cost is unknown, and not in the money figures.';
}

function renderCharts() {
  const days = daysFrom(since.value, until.value);
  const index = new Map(days.map((day, i) => [day, i]));
  const currency = currencySelect.value;
  const paid = days.map(() => null);
  const used = days.map(() => null);
  const paidTokens = days.map(() => 0);
  const generated = days.map(() => 0);
  for (const row of dayRows) {
    const i = index.get(row.day);
    if (i === undefined) continue;
    paidTokens[i] += row.paid_tokens;
    generated[i] += row.completion_tokens;
    if (row.currency === currency) {
      paid[i] = row.paid;
      used[i] = row.used;
    }
  }
  const spend = barChart({
    days,
    series: [
      { name: 'paid', className: 'paid', values: paid },
      { name: 'used', className: 'used', values: used },
    ],
    format: (value) => money(value, currency),
    label: `Spend per day in ${currency || 'no currency'}, paid and used`,
  });
  const tokens = barChart({
    days,
    series: [
      { name: 'tokens paid for', className: 'paid', values: paidTokens },
      { name: 'tokens generated', className: 'used', values: generated },
    ],
    format: (value) => count(Math.round(value)),
    label: 'Tokens per day, paid for and generated',
  });
  for (const [id, chart] of [['spend-chart', spend], ['token-chart', tokens]]) {
    const holder = $(id);
    holder.querySelector('svg')?.remove();
    holder.prepend(chart);
  }
}

function renderCurrencies(rows) {
  const found = currencies(rows);
  const chosen = found.includes(currencySelect.value) ? currencySelect.value : found[0] ?? '';
  currencySelect.replaceChildren(...found.map((currency) => new Option(currency, currency)));
  currencySelect.value = chosen;
  currencyChoice.hidden = found.length < 2;
}

// ---- the usage ------------------------------------------------------------------

function usageUrl(groupBy, extra = {}) {
  const params = new URLSearchParams({
    group_by: groupBy, since: since.value, until: until.value, ...extra,
  });
  if (kind.value) params.set('kind', kind.value);
  return `/api/admin/usage?${params}`;
}

function updateCsvLink() {
  csvLink.href = usageUrl(csvGroup.value, { format: 'csv', limit: '10000' });
}

async function loadUsage() {
  setStatus('Loading…');
  updateCsvLink();
  try {
    const [day, user, key, upstream] = await Promise.all([
      call(usageUrl('day')),
      call(usageUrl('user', { limit: String(TOP) })),
      call(usageUrl('key', { limit: String(TOP) })),
      call(usageUrl('upstream')),
    ]);
    dayRows = day.rows;
    renderTotals(day.rows);
    renderCurrencies(day.rows);
    renderCharts();
    renderTopUsers(user.rows);
    renderTopKeys(key.rows);
    renderUpstreams(upstream.rows);
    setStatus('');
    document.body.dataset.loaded = 'true';
  } catch (err) {
    setStatus(err.message, { error: true });
  }
}

// ---- accounts -------------------------------------------------------------------

function spentText(spent) {
  if (!spent.length) return '—';
  return spent.map((s) => money(s.paid, s.currency)).join(', ');
}

function numberInput(value, { label, step, placeholder, action }) {
  const input = document.createElement('input');
  input.type = 'number';
  input.min = '0';
  input.step = step;
  input.placeholder = placeholder;
  input.value = value ?? '';
  input.className = 'amount';
  input.dataset.field = action;
  input.setAttribute('aria-label', label);
  return input;
}

function button(text, action, id) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  b.dataset.action = action;
  b.dataset.id = id;
  return b;
}

function accountRow(user) {
  const tr = document.createElement('tr');
  tr.dataset.id = user.id;
  tr.dataset.username = user.username;
  tr.dataset.state = user.disabled ? 'disabled' : 'active';
  const who = cell(user.username);
  if (user.is_admin) {
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.textContent = 'admin';
    who.append(' ', badge);
  }
  const budget = user.token_budget_effective
    ? `${count(user.tokens_used)} of ${count(user.token_budget_effective)}`
    : count(user.tokens_used);
  const actions = document.createElement('div');
  actions.className = 'actions';
  actions.append(button('Save', 'save', user.id));
  if (user.id !== me?.id) {
    actions.append(user.disabled
      ? button('Enable', 'enable', user.id)
      : button('Disable', 'disable', user.id));
  }
  const actionCell = document.createElement('td');
  actionCell.append(actions);
  const budgetCell = document.createElement('td');
  budgetCell.append(numberInput(user.token_budget, {
    label: `Token budget of ${user.username}`, step: '1', action: 'token_budget',
    placeholder: user.token_budget == null ? 'default' : '',
  }));
  const limitCell = document.createElement('td');
  limitCell.append(numberInput(user.spend_limit, {
    label: `Spend limit of ${user.username}`, step: 'any', action: 'spend_limit',
    placeholder: user.spend_limit == null ? 'default' : '',
  }));
  tr.append(
    who,
    cell(user.disabled ? 'Disabled' : 'Active', 'state'),
    cell(budget, 'num'),
    cell(user.spend_limit_effective
      ? `${spentText(user.spent)} of ${money(user.spend_limit_effective)}`
      : spentText(user.spent), 'num'),
    budgetCell,
    limitCell,
    actionCell,
  );
  return tr;
}

function showAccount(user) {
  accounts.set(user.id, user);
  const old = usersBody.querySelector(`tr[data-id="${CSS.escape(user.id)}"]`);
  if (old) old.replaceWith(accountRow(user));
  else usersBody.append(accountRow(user));
}

function periodText(body) {
  const start = new Date(body.period_start).toLocaleString();
  const end = new Date(body.resets_at).toLocaleString();
  return `This budget period (a ${body.period}): from ${start} until ${end}. `
    + 'An empty budget or limit follows the server\'s default; 0 is unlimited.';
}

async function loadAccounts({ more = false } = {}) {
  if (!more) {
    accounts.clear();
    usersBody.replaceChildren();
  }
  const body = await call(`/api/admin/users?limit=${PAGE}&offset=${accounts.size}`);
  $('period').textContent = periodText(body);
  body.data.forEach(showAccount);
  $('more-users').hidden = !body.has_more;
}

/** An input's value for the API: null when empty (the default), else a number ≥ 0. */
function amountOf(input, { whole }) {
  const text = input.value.trim();
  if (text === '') return null;
  const value = Number(text);
  if (!Number.isFinite(value) || value < 0 || (whole && !Number.isInteger(value))) {
    throw new AdminError(whole
      ? 'A token budget is a whole number of tokens, 0 or more (empty: the default).'
      : 'A spend limit is an amount of money, 0 or more (empty: the default).');
  }
  return value;
}

async function changeAccount(id, action, row) {
  const user = accounts.get(id);
  if (!user) return;
  let body;
  if (action === 'save') {
    body = {
      token_budget: amountOf(row.querySelector('[data-field="token_budget"]'), { whole: true }),
      spend_limit: amountOf(row.querySelector('[data-field="spend_limit"]'), { whole: false }),
    };
  } else {
    body = { disabled: action === 'disable' };
  }
  const changed = await call(`/api/admin/users/${encodeURIComponent(id)}`, {
    method: 'PATCH', body,
  });
  showAccount(changed);
  const done = { save: 'saved', disable: 'disabled', enable: 'enabled again' }[action];
  setStatus(`${changed.username}: ${done}.`);
}

// ---- keys -----------------------------------------------------------------------

function keyRow(key) {
  const tr = document.createElement('tr');
  tr.dataset.id = key.id;
  tr.dataset.state = key.revoked ? 'revoked' : 'active';
  const actions = document.createElement('td');
  if (!key.revoked) actions.append(button('Revoke', 'revoke', key.id));
  tr.append(
    keyCell(key.name, key.prefix),
    cell(key.username ?? '(guest)'),
    cell(when(key.last_used_at)),
    cell(spentText(key.spent), 'num'),
    cell(key.revoked ? 'Revoked' : 'Active', 'state'),
    actions,
  );
  return tr;
}

function showKey(key) {
  keys.set(key.id, key);
  const old = keysBody.querySelector(`tr[data-id="${CSS.escape(key.id)}"]`);
  if (old) old.replaceWith(keyRow(key));
  else keysBody.append(keyRow(key));
}

async function loadKeys({ more = false } = {}) {
  if (!more) {
    keys.clear();
    keysBody.replaceChildren();
  }
  const body = await call(`/api/admin/keys?limit=${PAGE}&offset=${keys.size}`);
  body.data.forEach(showKey);
  $('more-keys').hidden = !body.has_more;
}

/** Revoking cannot be undone: the first click asks, the second revokes. */
async function revoke(button) {
  if (button.dataset.confirm !== 'true') {
    button.dataset.confirm = 'true';
    button.textContent = 'Confirm revoke';
    button.addEventListener('blur', () => {
      button.dataset.confirm = 'false';
      button.textContent = 'Revoke';
    }, { once: true });
    return;
  }
  const key = await call(`/api/admin/keys/${encodeURIComponent(button.dataset.id)}/revoke`, {
    method: 'POST',
  });
  showKey(key);
  setStatus(`Key ${key.name || key.prefix} of ${key.username ?? 'a guest'}: revoked.`);
}

// ---- wiring ---------------------------------------------------------------------

function guarded(work) {
  return async (...args) => {
    try {
      await work(...args);
    } catch (err) {
      setStatus(err.message, { error: true });
    }
  };
}

usersBody.addEventListener('click', guarded(async (event) => {
  const target = event.target.closest('button[data-action]');
  if (!target) return;
  target.disabled = true;
  try {
    await changeAccount(target.dataset.id, target.dataset.action, target.closest('tr'));
  } finally {
    target.disabled = false;
  }
}));

keysBody.addEventListener('click', guarded(async (event) => {
  const target = event.target.closest('button[data-action="revoke"]');
  if (target) await revoke(target);
}));

form.addEventListener('submit', (event) => {
  event.preventDefault();
  if (form.reportValidity()) loadUsage();
});
csvGroup.addEventListener('change', updateCsvLink);
currencySelect.addEventListener('change', renderCharts);
$('more-users').addEventListener('click', guarded(() => loadAccounts({ more: true })));
$('more-keys').addEventListener('click', guarded(() => loadKeys({ more: true })));

async function start() {
  const today = Date.now();
  until.value = isoDay(today);
  since.value = isoDay(today - (DEFAULT_DAYS - 1) * DAY_MS);
  try {
    me = await call('/api/me');
  } catch { /* only hides the "Disable" of one's own account */ }
  await Promise.all([
    loadUsage(), guarded(loadPerformance)(), guarded(loadAccounts)(), guarded(loadKeys)(),
  ]);
}

start();
