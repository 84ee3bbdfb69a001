// The file table: sorted, filtered and paginated in the page so that 10,000 rows stay fast.
// Every string from a scanned file reaches the page through textContent, never as markup.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("aiidetect-rows").textContent);
  var COLS = ["verdict", "p", "file", "format", "size", "reason"];
  var rows = data.map(function (r) {
    return {i: r[0], verdict: r[1], p: r[2], file: r[3], format: r[4], size: r[5], reason: r[6], card: r[7],
            failed: r[8] === 1, pText: r[9],
            hay: (r[3] + "\n" + r[6] + "\n" + (r[4] || "") + "\n" + r[1]).toLowerCase()};
  });
  // The symbol is for the eye; a screen reader says the word alone (the symbol's span is aria-hidden).
  var LABEL = {"ai-generated": ["\u25B2", "AI-generated"], "uncertain": ["?", "uncertain"],
               "likely-real": ["\u2713", "likely real"], "error": ["\u2715", "error"]};
  var ORDER = {"ai-generated": 0, "uncertain": 1, "error": 2, "likely-real": 3};
  var tbody = document.querySelector("#files-table tbody");
  var q = document.getElementById("filter-text");
  var vsel = document.getElementById("filter-verdict");
  var psel = document.getElementById("page-size");
  var count = document.getElementById("files-count");
  var prev = document.getElementById("page-prev");
  var next = document.getElementById("page-next");
  var state = {key: null, dir: 1, page: 0, view: rows.slice()};

  function cmp(a, b) {
    var k = state.key, x = a[k], y = b[k];
    if (k === "verdict") { x = ORDER[x]; y = ORDER[y]; }
    if (x === null || x === undefined) return (y === null || y === undefined) ? a.i - b.i : 1;  // blanks last
    if (y === null || y === undefined) return -1;
    if (typeof x === "string") { var c = x.localeCompare(y); return c ? c * state.dir : a.i - b.i; }
    return x === y ? a.i - b.i : (x < y ? -1 : 1) * state.dir;
  }

  // The page shows a zero-width or control character in a name as \u200c (aiidetect.report.safe.printable):
  // the query is written the same way, or a Persian name typed with its zero-width non-joiner, or an emoji
  // pasted with its variation selector, found no row.
  var HIDDEN = new RegExp(q.getAttribute("data-hidden") || "[]", "gu");
  function shown(s) {
    return s.replace(HIDDEN, function (c) {
      var o = c.codePointAt(0);
      return o > 0xFFFF ? "\\U" + ("0000000" + o.toString(16)).slice(-8) : "\\u" + ("000" + o.toString(16)).slice(-4);
    });
  }

  function apply() {
    var text = shown(q.value.trim()).toLowerCase();
    var v = vsel.value;
    state.view = rows.filter(function (r) {
      // "error" also takes a file whose metadata decided its verdict beside an error, as --verdict error does
      return (!v || r.verdict === v || (v === "error" && r.failed)) && (!text || r.hay.indexOf(text) !== -1);
    });
    if (state.key) state.view.sort(cmp);
    state.page = 0;
    render();
  }

  function size(n) {
    if (n === null || n === undefined) return "";
    if (n < 1024) return n + " B";
    if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1048576).toFixed(1) + " MiB";
  }

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function clip(td) {
    var d = document.createElement("div");
    d.className = "clip";
    td.appendChild(d);
    return d;
  }

  // The rows of `list`, as the screen or the paper shows them.
  function build(list) {
    var frag = document.createDocumentFragment();
    list.forEach(function (r) {
      var tr = document.createElement("tr");
      var td = cell(tr, "");
      var b = document.createElement("span");
      b.className = "badge v-" + r.verdict;
      var lab = LABEL[r.verdict] || ["", r.verdict];
      var sym = document.createElement("span");
      sym.setAttribute("aria-hidden", "true");
      sym.textContent = lab[0];
      b.appendChild(sym);
      b.appendChild(document.createTextNode(" " + lab[1]));
      td.appendChild(b);
      // the digits Python chose (fusion.shown_p_text): 0.900 beside "uncertain" for 0.899999 under a 0.9 band
      cell(tr, r.p === null ? "\u2014" : (r.pText || r.p.toFixed(3)), "num");
      // A name or reason can be thousands of characters (PATH_MAX is 4,096 bytes): its cell scrolls
      // inside a few lines instead of pushing every other row screens away.
      var f = clip(cell(tr, "", "wrap"));
      if (r.card) {
        var a = document.createElement("a");
        a.href = "#f" + r.i;
        a.textContent = r.file;
        f.appendChild(a);
      } else {
        // Over the page's card limit: the name is shown, and says why it leads nowhere.
        var s = document.createElement("span");
        s.textContent = r.file;
        f.appendChild(s);
        var m = document.createElement("small");
        m.className = "mute nocard";
        m.textContent = " (no card on this page)";
        f.appendChild(m);
      }
      cell(tr, r.format || "", "opt");
      cell(tr, size(r.size), "num opt");
      clip(cell(tr, "", "wrap opt")).textContent = r.reason;
      frag.appendChild(tr);
    });
    return frag;
  }

  function render() {
    var per = parseInt(psel.value, 10) || 100;
    var pages = Math.max(1, Math.ceil(state.view.length / per));
    if (state.page >= pages) state.page = pages - 1;
    var start = state.page * per, part = state.view.slice(start, start + per);
    tbody.replaceChildren(build(part));
    // A reason longer than its cell scrolls inside it: Tab must reach it, or a keyboard-only reader in a browser
    // that does not focus scrolling boxes by itself (Safari) never reads past its first lines.
    // All measured first, then marked: a mark between two measures made the browser lay the table out again
    // for each row.
    Array.prototype.filter.call(tbody.querySelectorAll("td.opt .clip"), function (d) {
      return d.scrollHeight > d.clientHeight + 1;
    }).forEach(function (d) { d.tabIndex = 0; });
    count.textContent = state.view.length ? ("Showing " + (start + 1) + "\u2013" + (start + part.length) + " of " +
      state.view.length + (state.view.length === 1 ? " file" : " files") +
      (state.view.length !== rows.length ? " (filtered from " + rows.length + ")" : ""))
      : "No file matches the filter.";
    prev.disabled = state.page === 0;
    next.disabled = state.page >= pages - 1;
  }

  document.querySelectorAll("#files-table th[data-key]").forEach(function (th) {
    th.querySelector("button").addEventListener("click", function () {
      var k = th.getAttribute("data-key");
      state.dir = state.key === k ? -state.dir : (k === "p" || k === "size" ? -1 : 1);
      state.key = k;
      document.querySelectorAll("#files-table th[data-key]").forEach(function (o) { o.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
      state.view.sort(cmp);
      state.page = 0;
      render();
    });
  });
  var timer = null;
  // The overview's counts list their files, and "Find a file" puts the cursor in the search box: the link
  // alone only scrolled, leaving a phone reader to find and tap the box.
  Array.prototype.forEach.call(document.querySelectorAll(".counts a[data-verdict]"), function (a) {
    a.addEventListener("click", function () {
      // Those files, all of them: a name typed in the search box before kept filtering, and "147 files" listed 3.
      q.value = "";
      vsel.value = a.getAttribute("data-verdict");
      apply();
    });
  });
  var find = document.getElementById("find-file");
  if (find) find.addEventListener("click", function (ev) { ev.preventDefault(); q.focus(); q.scrollIntoView(); });
  q.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(apply, 120); });
  vsel.addEventListener("change", apply);
  psel.addEventListener("change", function () { state.page = 0; render(); });
  prev.addEventListener("click", function () { state.page -= 1; render(); });
  next.addEventListener("click", function () { state.page += 1; render(); });
  // Up/Down move between the rows' links, as in a spreadsheet.
  tbody.addEventListener("keydown", function (ev) {
    if (ev.key !== "ArrowDown" && ev.key !== "ArrowUp") return;
    var links = Array.prototype.slice.call(tbody.querySelectorAll("a"));
    var k = links.indexOf(document.activeElement);
    if (k === -1) return;
    var j = k + (ev.key === "ArrowDown" ? 1 : -1);
    if (j >= 0 && j < links.length) { links[j].focus(); ev.preventDefault(); }
  });
  // A printout has no clicks: open the flagged cards' evidence details before printing, and list every file.
  // On paper every file has its row, whatever the page, filter or page size on screen (a printout for a legal
  // review held the first 100 rows, or none), in the order sorted. They go to a body of the table of their own,
  // shown on paper only: swapping the screen's rows for them and back lost the focus of a row's link to the page's
  // top, and a print whose afterprint never came (headless Chromium's window.print()) left all 10,000 rows on
  // screen, the pager dead and the filter shown no longer applied.
  var paper = document.createElement("tbody");
  paper.className = "paper";
  tbody.parentNode.appendChild(paper);
  // The details opened for paper close again after it: a print left every flagged card's evidence open on screen.
  var opened = [];
  window.addEventListener("beforeprint", function () {
    document.querySelectorAll("article.card.flagged details:not(.absent):not([open])").forEach(function (d) {
      d.open = true;
      opened.push(d);
    });
    var all = rows.slice();
    if (state.key) all.sort(cmp);
    paper.replaceChildren(build(all));
  });
  window.addEventListener("afterprint", function () {
    opened.forEach(function (d) { d.open = false; });
    opened = [];
    paper.replaceChildren();
  });
  document.documentElement.setAttribute("data-ready", "1");
  render();
})();
