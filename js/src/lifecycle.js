/*
 * lifecycle.js: the browser side of the lifecycle nginx module.
 *
 * Reports what only the browser sees (cart changes made by JavaScript,
 * purchases, custom events, popup shows, dismissals and opt-ins) to the
 * module's lifecycle_collect endpoint, and shows the popup the module
 * placed in the page (div#lc-popup, hidden) on exit intent.
 *
 *   window.lc = window.lc || [];
 *   lc.push(['track', 'add_to_cart', {id: 'p42', qty: 1}]);
 *   lc.push(['config', {collect: '/lifecycle/collect'}]);
 *   lc.push(['consent', true]);
 *
 * No dependencies, no storage, no globals but window.lc. Built by
 * js/build.mjs (esbuild) into js/dist/lifecycle.min.js, which the module
 * serves. The README's "lifecycle.js" section is its user guide.
 */
((w, d) => {
    const q = (w.lc = w.lc || []);
    if (!q.push || q.lc) return; // not our queue, or loaded twice
    q.lc = 1;

    const nav = navigator;
    const script = d.currentScript;
    // beacon fields, in the order they go out; the first six can come
    // from data-lc-* attributes
    const FIELDS = ['id', 'qty', 'value', 'currency', 'order', 'name',
                    'email', 'consent', 'popup'];
    // the events and the fields each may carry (indexes into FIELDS):
    // lifecycle_collect refuses any other field with a 400
    const EVENTS = {
        add_to_cart: '0123', remove_from_cart: '01', purchase: '234',
        custom: '0123458', popup_shown: '8', popup_dismissed: '8',
        optin: '678',
    };
    // Global Privacy Control: nothing is ever sent, no popup is shown
    const gpc = nav.globalPrivacyControl === true;

    // a setting from the script tag or <html> (or the popup, when set up)
    let popup;
    const attr = (name) => {
        for (const el of [script, d.documentElement, popup]) {
            if (el && el.hasAttribute(name)) return el.getAttribute(name);
        }
        return null;
    };

    let collect = attr('data-lc-collect') || '/lifecycle/collect';
    // true: send; false: refused; null: wait for lc.push(['consent', true])
    let consent = attr('data-lc-consent-required') == null || null;
    let waiting = [];
    let linkAt = -1e9; // when an <a href> was last clicked

    const body = (e, o) => {
        const b = new URLSearchParams({ e });
        for (const i of EVENTS[e]) {
            const k = FIELDS[i];
            let v = o && o[k];
            if (v === true) v = 1;
            if (v != null && v !== '' && v !== false) b.append(k, v);
        }
        return b;
    };

    // POST the form-encoded body; resolves to the response (its status)
    const post = (b, keepalive) =>
        w.fetch
            ? fetch(collect, { method: 'POST', body: b, keepalive,
                               credentials: 'same-origin' })
            : new Promise((ok, fail) => {
                  const x = new XMLHttpRequest();
                  x.open('POST', collect);
                  x.onload = () => ok(x);
                  x.onerror = fail;
                  x.send(b);
              });

    const beacon = (b) => {
        if (gpc || consent === false) return;
        if (!consent) {
            if (waiting.length < 50) waiting.push(b);
            return;
        }
        try {
            if (nav.sendBeacon && nav.sendBeacon(collect, b)) return;
        } catch (x) { /* fall back */ }
        post(b, true).catch(() => {});
    };

    const run = (c) => {
        const cmd = c[0], a = c[1];
        if (cmd === 'track') {
            if (typeof a !== 'string' || !a) return;
            // an event name of the shop's own is a custom event
            beacon(EVENTS.hasOwnProperty(a) ? body(a, c[2])
                                            : body('custom', { ...c[2], name: a }));
        } else if (cmd === 'config') {
            if (a && a.collect) collect = a.collect;
        } else if (cmd === 'consent') {
            consent = !!a;
            const b = waiting;
            waiting = [];
            if (consent) b.forEach(beacon);
        }
    };
    const safe = (c) => {
        try { run(c); } catch (x) { /* one bad command stops nothing */ }
    };

    // Replay: config and consent first, then the events, in order; later
    // pushes run at once.
    const queued = q.splice(0);
    const setting = (c) => c && (c[0] === 'config' || c[0] === 'consent');
    queued.filter(setting).concat(queued.filter((c) => !setting(c))).forEach(safe);
    q.push = (...c) => { c.forEach(safe); return q.length; };

    // data-lc-track="EVENT" data-lc-id="p42" data-lc-qty="1" ...: clicked
    // (or a form: submitted)
    const track = (el) => {
        const o = {};
        for (const k of FIELDS.slice(0, 6)) {
            const v = el.getAttribute('data-lc-' + k);
            if (v != null) o[k] = v;
        }
        safe(['track', el.getAttribute('data-lc-track'), o]);
    };
    d.addEventListener('click', (e) => {
        const t = e.target;
        if (!t.closest) return;
        if (t.closest('a[href]')) linkAt = performance.now();
        const el = t.closest('[data-lc-track]');
        if (el && el.tagName !== 'FORM') track(el);
    }, true);
    d.addEventListener('submit', (e) => {
        const f = e.target;
        if (f.hasAttribute && f.hasAttribute('data-lc-track')) track(f);
    }, true);

    const setup = () => {
        popup = d.getElementById('lc-popup');
        if (!popup || gpc) return;
        collect = attr('data-lc-collect') || collect;
        const name = popup.getAttribute('data-lc-popup');
        const delay = +popup.getAttribute('data-lc-delay') || 0;
        let state = 0; // 0 not shown yet, 1 open, 2 closed for good
        let converted = 0;
        let back;

        const focusables = () =>
            [...popup.querySelectorAll(
                'a[href],button,input,select,textarea,[tabindex]')]
                .filter((el) => !el.disabled && el.tabIndex >= 0 &&
                                el.getClientRects().length);
        const enter = () => (focusables()[0] || popup).focus();

        const open = () => {
            if (state || consent !== true || performance.now() < delay) return;
            state = 1;
            back = d.activeElement;
            popup.hidden = false;
            popup.tabIndex = -1;
            const h = popup.querySelector('h1,h2,h3');
            if (h && !popup.hasAttribute('aria-labelledby')) {
                h.id = h.id || 'lc-popup-title';
                popup.setAttribute('aria-labelledby', h.id);
            }
            enter();
            safe(['track', 'popup_shown', { popup: name }]);
        };

        const close = () => {
            if (state !== 1) return;
            state = 2;
            popup.hidden = true;
            if (back && back.focus) back.focus();
            if (!converted) safe(['track', 'popup_dismissed', { popup: name }]);
        };

        // exit intent, desktop: the pointer leaves through the top edge,
        // not just after a link was clicked
        d.addEventListener('mouseout', (e) => {
            if (!e.relatedTarget && e.clientY <= 0 &&
                performance.now() - linkAt > 1500) open();
        });

        // exit intent, touch screens: a fast scroll back up (a quarter of
        // the screen within a second) after reading 40% of the page down
        if (w.matchMedia && matchMedia('(pointer:coarse)').matches) {
            let deepest = 0, last = 0, peak = 0, peakAt = 0;
            w.addEventListener('scroll', () => {
                const y = w.scrollY, now = performance.now();
                const room = d.documentElement.scrollHeight - w.innerHeight;
                if (y > deepest) deepest = y;
                if (y >= last || now - peakAt > 1000) { peak = y; peakAt = now; }
                last = y;
                if (deepest > room * 0.4 && peak - y > w.innerHeight / 4) open();
            }, { passive: true });
        }

        d.addEventListener('keydown', (e) => {
            if (state !== 1) return;
            if (e.key === 'Escape' || e.key === 'Esc') {
                e.preventDefault();
                close();
            } else if (e.key === 'Tab') {
                const f = focusables(), a = d.activeElement;
                const inside = a !== popup && popup.contains(a);
                if (!f.length) {
                    e.preventDefault();
                    popup.focus();
                } else if (e.shiftKey ? !inside || a === f[0]
                                      : a === f[f.length - 1] || !popup.contains(a)) {
                    e.preventDefault();
                    f[e.shiftKey ? f.length - 1 : 0].focus();
                }
            }
        }, true);
        // focus that gets out of the open dialog anyway is brought back
        d.addEventListener('focusin', (e) => {
            if (state === 1 && !popup.contains(e.target)) enter();
        });

        // close buttons, and the backdrop (the popup element itself)
        popup.addEventListener('click', (e) => {
            const t = e.target;
            if (t === popup || t.closest('[data-lc-close],.lc-popup-close')) {
                e.preventDefault();
                close();
            }
        });

        // the opt-in form: an email and an explicit, unticked consent box
        const form = popup.querySelector('form[data-lc-optin]');
        if (!form) return;
        const email = form.elements.email;
        const box = form.elements.consent;
        const thanks = popup.querySelector('.lc-thanks');
        let error = form.querySelector('.lc-error');
        if (!error) {
            error = d.createElement('p');
            error.className = 'lc-error';
            error.hidden = true;
            form.append(error);
        }
        error.setAttribute('role', 'alert');
        const invalid = error.textContent.trim() || 'Please check your email address.';
        if (email) email.required = true;
        if (box) { box.required = true; box.checked = false; }
        let busy = 0;

        form.addEventListener('submit', async (e) => {
            e.preventDefault();
            if (busy || state !== 1 || gpc || consent !== true) return;
            if (!email || !box || !box.checked || !form.reportValidity()) return;
            busy = 1;
            let status = 0;
            try {
                status = (await post(body('optin', {
                    email: email.value.trim(), consent: 1, popup: name,
                }))).status;
            } catch (x) { /* network: status 0 */ }
            busy = 0;
            if (status === 204) {
                converted = 1;
                form.hidden = true;
                if (!thanks) return close();
                thanks.hidden = false;
                thanks.tabIndex = -1;
                thanks.focus();
                return;
            }
            error.textContent = status === 400 ? invalid :
                error.getAttribute('data-lc-retry') ||
                'Sorry, that did not work. Please try again later.';
            error.hidden = false;
            email.setAttribute('aria-invalid', status === 400);
            if (status === 400) email.focus();
        });
    };
    if (d.readyState === 'loading') d.addEventListener('DOMContentLoaded', setup);
    else setup();
})(window, document);
