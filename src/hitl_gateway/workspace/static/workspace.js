// The workspace's only script: countdowns, the lease renewal, the edit diff, keyboard
// shortcuts. No framework, nothing fetched from outside the gateway.
(function () {
  "use strict";
  const csrf = document.body.dataset.csrf || "";

  function human(ms) {
    const s = Math.round(Math.abs(ms) / 1000);
    const text = s >= 5400 ? Math.round(s / 3600) + " h" : s >= 90 ? Math.round(s / 60) + " min" : s + " s";
    return ms < 0 ? text + " late" : text;
  }
  function tick() {
    const now = Date.now();
    document.querySelectorAll("[data-deadline-ms]").forEach(function (el) {
      const left = Number(el.dataset.deadlineMs) - now;
      el.textContent = human(left);
      el.classList.toggle("late", left < 0);
      el.classList.toggle("soon", left >= 0 && left < 15 * 60 * 1000);
    });
    document.querySelectorAll("[data-age-s]").forEach(function (el) {
      el.textContent = human(Number(el.dataset.ageS) * 1000);
    });
  }
  tick();
  setInterval(tick, 1000);

  // Keep the lease while the page is open.
  const renew = document.getElementById("renew");
  if (renew) {
    const every = Number(renew.dataset.everyS || 30) * 1000;
    setInterval(function () {
      fetch(renew.dataset.url, { method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" })
        .then(function (r) { return r.json().then(function (body) { return [r.ok, body]; }); })
        .then(function (res) {
          const lease = document.getElementById("lease");
          if (res[0] && lease && res[1].expires_at_ms) { lease.dataset.deadlineMs = res[1].expires_at_ms; }
          if (!res[0]) { document.title = "(lease lost) " + document.title; }
        })
        .catch(function () {});
    }, every);
  }

  // The edit: a line diff against the original as the reviewer types.
  const edited = document.getElementById("edited");
  const diff = document.getElementById("diff");
  function lineDiff(a, b) {
    const n = a.length, m = b.length;
    const dp = Array.from({ length: n + 1 }, function () { return new Array(m + 1).fill(0); });
    for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--)
      dp[i][j] = a[i] === b[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
    const out = [];
    let i = 0, j = 0;
    while (i < n && j < m) {
      if (a[i] === b[j]) { out.push([" ", a[i]]); i++; j++; }
      else if (dp[i + 1][j] >= dp[i][j + 1]) { out.push(["-", a[i]]); i++; }
      else { out.push(["+", b[j]]); j++; }
    }
    while (i < n) out.push(["-", a[i++]]);
    while (j < m) out.push(["+", b[j++]]);
    return out;
  }
  function showDiff() {
    if (!edited || !diff) return;
    const before = edited.dataset.original.split("\n");
    const after = edited.value.split("\n");
    diff.textContent = "";
    let changed = false;
    lineDiff(before, after).forEach(function (row) {
      const span = document.createElement("span");
      span.textContent = row[0] + " " + row[1];
      if (row[0] === "+") span.className = "add";
      if (row[0] === "-") span.className = "del";
      if (row[0] !== " ") changed = true;
      diff.appendChild(span);
      if (row[0] === " ") diff.appendChild(document.createTextNode("\n"));
    });
    const submit = document.getElementById("submit-edit");
    if (submit) submit.disabled = !changed;
  }
  if (edited) { edited.addEventListener("input", showDiff); showDiff(); }

  // Keyboard shortcuts for the common path (not while typing).
  document.addEventListener("keydown", function (e) {
    const t = e.target || {};
    const typing = /^(TEXTAREA|SELECT)$/.test(t.tagName || "") ||
      (t.tagName === "INPUT" && !/^(radio|checkbox|button|submit)$/.test(t.type));
    if (e.key === "Escape" && typing) { e.target.blur(); return; }
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "a") { const b = document.querySelector("[data-testid=approve]"); if (b) { e.preventDefault(); b.click(); } }
    if (e.key === "e") { const p = document.getElementById("edit-panel"); if (p) { e.preventDefault(); p.open = true; edited.focus(); } }
    if (e.key === "r") { const p = document.getElementById("reject-panel"); if (p) { e.preventDefault(); p.open = true; document.getElementById("reason_choice").focus(); } }
  });
})();
