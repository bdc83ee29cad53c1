// Browser tests of lifecycle.js against the module: Debian's chromium,
// headless, driven by playwright-core. t/31-browser.t starts Redis and
// nginx (the demo shop, the demo's blocks and popup, and the test pages
// under /t/), then runs this with:
//
//   LC_BASE        http://127.0.0.1:PORT
//   LC_REDIS_PORT  the private Redis
//   LC_DELAY       the demo popup's delay= in ms
//   CHROMIUM       the browser (default /usr/bin/chromium)
//   LC_SCREENSHOT  a PNG file: the demo popup, open, is saved there
//
// Prints TAP (one line per check), which t/31-browser.t replays; exits
// non-zero when a check failed.
import { chromium } from 'playwright-core';
import { connect } from './resp.mjs';

const base = process.env.LC_BASE;
const redisPort = Number(process.env.LC_REDIS_PORT);
const delay = Number(process.env.LC_DELAY || 1500);

// --- TAP -------------------------------------------------------------------
let n = 0, failures = 0;
const ok = (cond, name, ...diag) => {
    n++;
    console.log(`${cond ? 'ok' : 'not ok'} ${n} - ${name}`);
    if (!cond) {
        failures++;
        for (const d of diag) console.log('# ' + String(typeof d === 'string' ? d : JSON.stringify(d)).replace(/\n/g, '\n# '));
    }
    return !!cond;
};
const is = (got, want, name) => ok(got === want, name, `got:  ${JSON.stringify(got)}`, `want: ${JSON.stringify(want)}`);
const skip = (name, why) => { n++; console.log(`ok ${n} - ${name} # SKIP ${why}`); };
// a known problem, reported, not counted as a failure
const note = (s) => console.log('# ' + s);

// --- helpers ---------------------------------------------------------------
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(fn, timeout = 5000, every = 50) {
    const end = Date.now() + timeout;
    for (;;) {
        const v = await fn();
        if (v || Date.now() > end) return v;
        await sleep(every);
    }
}

const redis = await connect(redisPort);
const shard = (vid) => (parseInt(vid.slice(0, 2), 16) & 0x3f).toString(16).padStart(2, '0');
const profileKey = (vid) => `lc:{${shard(vid)}}:v:${vid}`;
const hgetall = async (key) => {
    const a = (await redis.cmd('HGETALL', key)) || [];
    const o = {};
    for (let i = 0; i < a.length; i += 2) o[a[i]] = a[i + 1];
    return o;
};
// the visitor's entries of its shard's event stream: [{_id, type, ...}]
const events = async (vid) => {
    const a = (await redis.cmd('XRANGE', `lc:{${shard(vid)}}:ev`, '-', '+')) || [];
    return a.map(([id, f]) => {
        const o = { _id: id };
        for (let i = 0; i < f.length; i += 2) o[f[i]] = f[i + 1];
        return o;
    }).filter((e) => e.vid === vid);
};
// a popup's state on the profile: "SHOWN WINDOW DISMISSED CONVERTED"
const popState = (p, name) => {
    const [shown, since, dismissed, converted] = (p['pop:' + name] || '0 0 0 0').split(' ').map(Number);
    return { shown, since, dismissed, converted };
};

// launch() starts chromium with a fresh profile (a new temporary
// user-data-dir, removed at close); each visitor is a new context of it.
const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
           '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
});
note(`chromium ${browser.version()}, ${base}`);

// A visitor: a fresh browser context (its own cookies), a page, and every
// POST to a collect URL it made, as {path, body, type, headers}.
async function visitor(options = {}, init) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...options });
    if (init) await context.addInitScript(init);
    const beacons = [];
    context.on('request', (req) => {
        const path = new URL(req.url()).pathname;
        if (req.method() === 'POST' && /collect$/.test(path)) {
            beacons.push({ path, body: req.postData() || '', type: req.headers()['content-type'] || '',
                           kind: req.resourceType(), req });
        }
    });
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    const vid = async () => {
        const c = (await context.cookies()).find((c) => c.name === 'lc_vid');
        return c ? c.value.split('.')[0] : null;
    };
    const bodies = () => beacons.map((b) => b.body);
    return { context, page, beacons, bodies, vid, errors };
}

const exitTop = async (page) => {
    await page.mouse.move(640, 200);
    await page.mouse.move(640, -10, { steps: 4 });
};
const visible = (page) => page.isVisible('#lc-popup');
const since = (page) => page.evaluate(() => performance.now());
const focusIn = (page) => page.evaluate(() => {
    const p = document.getElementById('lc-popup');
    return !!p && p.contains(document.activeElement);
});
const active = (page) => page.evaluate(() => {
    const a = document.activeElement;
    return a ? (a.id || a.name || a.className || a.tagName) : null;
});
const h1 = (page) => page.textContent('h1');
const waitBeacon = (v, body, timeout = 3000) => until(() => v.bodies().includes(body), timeout);

async function scenario(name, fn) {
    note(`--- ${name}`);
    try {
        await fn();
    } catch (e) {
        ok(false, `${name}: ran to the end`, e.stack || String(e));
    }
}

// --- 1. browsing personalizes the page; exit intent; Esc --------------------
await scenario('desktop visitor: hero, exit intent, Esc', async () => {
    const v = await visitor();
    const { page } = v;
    await page.goto(base + '/');
    is(await h1(page), 'New season, same good things', 'a new visitor sees the default hero');
    is(await page.$('#lc-popup'), null, 'and no popup');
    for (const p of ['p1', 'p2', 'p3']) await page.goto(`${base}/product/${p}.html`);
    // the shop serves its pages "Cache-Control: no-cache": the copy of /
    // seen first is revalidated, and the module answers with the
    // personalized page, not a 304
    await page.goto(base + '/');
    is(await h1(page), 'Still thinking about shoes?', 'back on the home page seen before, after three shoes: the hero is personalized');
    ok(await page.$('#lc-popup[data-lc-popup="save-visit"]'), 'the save-visit popup is in the page');
    is(await visible(page), false, 'hidden until exit intent');

    // before the popup's dwell time: nothing
    const t0 = await since(page);
    await exitTop(page);
    if (t0 + 100 < delay) {
        is(await visible(page), false, `pointer out through the top ${Math.round(t0)} ms after load (delay ${delay}): not shown`);
    } else {
        skip('pointer out before the dwell time: not shown', `the page took ${Math.round(t0)} ms to load`);
    }

    // after it, but right after a click on a link: nothing
    await until(async () => (await since(page)) > delay + 50, delay + 2000);
    await page.evaluate(() => document.querySelector('a.brand')
        .addEventListener('click', (e) => e.preventDefault()));
    await page.click('a.brand');
    await exitTop(page);
    is(await visible(page), false, 'pointer out right after a link click: not shown');
    is(v.beacons.length, 0, 'nothing sent yet');

    await sleep(1600);
    await page.focus('input[name=q]');
    await page.mouse.move(640, 300);
    await page.mouse.move(300, 200, { steps: 2 });
    is(await visible(page), false, 'moving inside the page: not shown');
    await page.mouse.move(300, 600, { steps: 2 });
    await page.mouse.move(1290, 600, { steps: 3 }); // out through the right edge
    is(await visible(page), false, 'pointer out through the side: not shown');
    await exitTop(page);
    ok(await visible(page), 'pointer out through the top after the dwell time: shown');
    if (process.env.LC_SCREENSHOT) await page.screenshot({ path: process.env.LC_SCREENSHOT });
    ok(await focusIn(page), 'focus moved into the dialog');
    is(await active(page), 'lc-email', 'onto its first field');
    ok(await waitBeacon(v, 'e=popup_shown&popup=save-visit'), 'popup_shown sent',
       v.bodies());
    const shown = v.beacons.find((b) => b.body.startsWith('e=popup_shown'));
    ok(shown && /^application\/x-www-form-urlencoded/.test(shown.type),
       'form-encoded', shown && shown.type);
    is(shown && shown.path, '/lifecycle/collect', 'to /lifecycle/collect');
    is(shown && shown.kind, 'ping', 'by navigator.sendBeacon');
    is(await page.getAttribute('#lc-popup', 'aria-labelledby'), 'lc-popup-save-visit-title',
       'the dialog is labelled by its heading');

    // focus stays in the dialog
    let inside = true;
    for (let i = 0; i < 6; i++) {
        await page.keyboard.press('Tab');
        inside = inside && await focusIn(page);
    }
    ok(inside, 'Tab cycles inside the dialog');
    await page.focus('#lc-email');
    await page.keyboard.press('Shift+Tab');
    is(await active(page), 'lc-popup-close', 'Shift+Tab from the first field goes to the last control');
    await page.keyboard.press('Tab');
    is(await active(page), 'lc-email', 'Tab from the last control goes back to the first');

    await exitTop(page);
    await page.keyboard.press('Escape');
    is(await visible(page), false, 'Esc closes it');
    is(await active(page), 'q', 'focus is back where it was (the search field)');
    ok(await waitBeacon(v, 'e=popup_dismissed&popup=save-visit'), 'popup_dismissed sent', v.bodies());
    await exitTop(page);
    await sleep(100);
    is(await visible(page), false, 'once per page: not shown again');
    is(v.bodies().filter((b) => b.startsWith('e=popup_shown')).length, 1, 'popup_shown sent once');

    const vid = await v.vid();
    {
        const prof = await until(async () => {
            const p = await hgetall(profileKey(vid));
            return popState(p, 'save-visit').dismissed ? p : null;
        });
        const st = popState(prof || {}, 'save-visit');
        ok(prof, 'Redis: the dismissal is on the profile (pop:save-visit)', prof);
        ok(Math.abs(st.dismissed - Date.now()) < 60000,
           'Redis: the time of the dismissal', prof);
        ok(st.shown >= 1, 'Redis: the show is counted', prof);
        const ev = await events(vid);
        ok(ev.some((e) => e.type === 'popup_shown'), 'Redis: a popup_shown event in lc:{hh}:ev', ev.slice(-3));
        ok(ev.some((e) => e.type === 'popup_dismissed'), 'Redis: a popup_dismissed event in lc:{hh}:ev', ev.slice(-3));
        await page.goto(base + '/');
        is(await page.$('#lc-popup'), null, 'dismissed: the next page has no popup (decided server side)');
    }
    is(v.errors.length, 0, 'no JavaScript error', v.errors);
    await v.context.close();
});

// --- 2. another visitor opts in ---------------------------------------------
await scenario('opt-in through the popup', async () => {
    const v = await visitor();
    const { page } = v;
    for (const p of ['p4', 'p5', 'p6']) await page.goto(`${base}/product/${p}.html`);
    await page.goto(base + '/');
    is(await h1(page), 'Picked up where you left off', 'three bags: the "recently viewed" hero');
    await until(async () => (await since(page)) > delay + 50, delay + 2000);
    await exitTop(page);
    ok(await visible(page), 'exit intent: the popup is shown');
    is(await page.isChecked('input[name=consent]'), false, 'the consent box is unticked');

    await page.fill('#lc-email', '  Shopper.B@Example.COM ');
    await page.click('.lc-optin button[type=submit]');
    await sleep(200);
    ok(!v.bodies().some((b) => b.startsWith('e=optin')), 'without consent ticked the form is not sent');
    ok(await visible(page), 'and the popup stays');

    await page.check('input[name=consent]');
    const [resp] = await Promise.all([
        page.waitForResponse((r) => r.url().endsWith('/lifecycle/collect') &&
                                    (r.request().postData() || '').startsWith('e=optin')),
        page.click('.lc-optin button[type=submit]'),
    ]);
    const req = resp.request();
    is(req.postData(), 'e=optin&email=Shopper.B%40Example.COM&consent=1&popup=save-visit',
       'optin: email (trimmed), consent=1, popup');
    is(req.resourceType(), 'fetch', 'sent with fetch (the answer is read)');
    is((await req.allHeaders()).origin, base, 'with the Origin header');
    is(resp.status(), 204, 'answered 204');
    ok(await page.isVisible('.lc-thanks'), 'the thank-you is shown');
    is(await page.isVisible('.lc-optin'), false, 'the form is gone');
    is(await active(page), 'lc-thanks', 'focus on the thank-you');
    await page.keyboard.press('Escape');
    is(await visible(page), false, 'Esc closes it');
    await sleep(200);
    ok(!v.bodies().some((b) => b.startsWith('e=popup_dismissed')), 'a conversion is not a dismissal');

    const vid = await v.vid();
    {
        const prof = await until(async () => {
            const p = await hgetall(profileKey(vid));
            return p.email ? p : null;
        });
        is(prof && prof.email, 'shopper.b@example.com', 'Redis: the normalised email on the profile');
        ok(prof && prof.optin, 'Redis: optin on the profile', prof);
        ok(prof && popState(prof, 'save-visit').converted, 'Redis: the conversion (pop:save-visit)', prof);
        const ev = await events(vid);
        ok(ev.some((e) => e.type === 'optin'), 'Redis: an optin event in lc:{hh}:ev', ev.slice(-3));
        await page.goto(base + '/');
        is(await page.$('#lc-popup'), null, 'opted in: no popup any more');
    }
    is(v.errors.length, 0, 'no JavaScript error', v.errors);
    await v.context.close();
});

// --- 3. popup behaviour, client side (collect answered by the test) ---------
await scenario('popup: close button, backdrop, 400 and 429 answers', async () => {
    const v = await visitor();
    const { page, context } = v;
    let answer = 204;
    await context.route('**/lifecycle/collect', (route) => {
        const body = route.request().postData() || '';
        const status = body.startsWith('e=optin') ? answer : 204;
        route.fulfill(status === 204 ? { status }
            : { status, contentType: 'application/json',
                body: JSON.stringify({ error: status === 400 ? 'email' : 'rate' }) });
    });
    const openPopup = async () => {
        await page.goto(base + '/t/popup.html');
        await until(async () => (await since(page)) > 350, 3000);
        await exitTop(page);
        return visible(page);
    };

    ok(await openPopup(), '/t/popup.html (the demo template): shown on exit intent');
    await page.click('.lc-popup-close');
    is(await visible(page), false, 'the close button closes it');
    ok(await waitBeacon(v, 'e=popup_dismissed&popup=save-visit'), 'popup_dismissed sent');

    ok(await openPopup(), 'shown again on a new page');
    await page.mouse.click(8, 8);
    is(await visible(page), false, 'a click on the backdrop closes it');
    await openPopup();
    await page.click('.lc-popup-box h2');
    ok(await visible(page), 'a click inside the box does not');

    await page.fill('#lc-email', 'someone@example.com');
    await page.check('input[name=consent]');
    answer = 400;
    await page.click('.lc-optin button[type=submit]');
    await until(() => page.isVisible('.lc-error'), 3000);
    ok(await page.isVisible('.lc-error'), '400: an inline error');
    is((await page.textContent('.lc-error')).trim(), 'Please check your email address.', 'the template\'s message');
    is(await page.getAttribute('#lc-email', 'aria-invalid'), 'true', 'the field is marked invalid');
    is(await active(page), 'lc-email', 'and focused');
    ok(await visible(page), 'the popup stays open');
    is(await page.isVisible('.lc-thanks'), false, 'no thank-you');

    answer = 429;
    await page.click('.lc-optin button[type=submit]');
    await until(async () => /try again/.test(await page.textContent('.lc-error')), 3000);
    ok(/try again/.test(await page.textContent('.lc-error')), '429: "try again later"');

    answer = 204;
    await page.click('.lc-optin button[type=submit]');
    await until(() => page.isVisible('.lc-thanks'), 3000);
    ok(await page.isVisible('.lc-thanks'), 'then 204: thank-you');
    await page.click('.lc-popup-close');
    is(await visible(page), false, 'closed');
    const optins = v.bodies().filter((b) => b.startsWith('e=optin'));
    is(optins.length, 3, 'three optin posts');
    is(v.errors.length, 0, 'no JavaScript error', v.errors);
    await context.close();
});

// --- 4. data-lc-track and the queue ----------------------------------------
await scenario('data-lc-track and the lc queue', async () => {
    const v = await visitor();
    const { page } = v;
    await page.goto(base + '/t/buttons.html');
    ok(await waitBeacon(v, 'e=custom&name=queued_before_load'), 'a command queued before the script loaded was sent', v.bodies());
    const vid = await v.vid();
    ok(vid, 'the page gave the visitor a cookie');
    await page.click('#add');
    ok(await waitBeacon(v, 'e=add_to_cart&id=p5&qty=2'), 'data-lc-track button: add_to_cart id=p5 qty=2', v.bodies());
    {
        const [prof, cart] = await until(async () => {
            const p = await hgetall(profileKey(vid));
            const c = await hgetall(profileKey(vid) + ':cart');
            return c.p5 ? [p, c] : null;
        }) || [{}, {}];
        is(cart.p5, '2', 'Redis: the :cart hash holds p5 => 2');
        is(prof.cart, '2', 'Redis: cart on the profile counts 2 units');
        const ev = await events(vid);
        ok(ev.some((e) => e.type === 'add_to_cart' && e.id === 'p5'),
           'Redis: an add_to_cart event in lc:{hh}:ev', ev.slice(-3));
    }
    await page.click('#wish');
    ok(await waitBeacon(v, 'e=custom&id=p5&name=wishlist'),
       'data-lc-track="custom" with data-lc-name', v.bodies());
    await page.evaluate(() => lc.push(['track', 'purchase', { order: 'T-1001', value: 164.5, currency: 'EUR' }]));
    ok(await waitBeacon(v, 'e=purchase&value=164.5&currency=EUR&order=T-1001'), 'lc.push after load: purchase at once', v.bodies());
    {
        const prof = await until(async () => {
            const p = await hgetall(profileKey(vid));
            return p.last_order ? p : null;
        }) || {};
        is(prof.last_order, 'T-1001', 'Redis: the purchase is on the profile (last_order)');
        is(prof.cart, '0', 'Redis: and the cart is empty');
    }
    is(v.errors.length, 0, 'no JavaScript error', v.errors);
    await v.context.close();
});

// --- 5. JavaScript disabled -------------------------------------------------
await scenario('JavaScript disabled', async () => {
    const v = await visitor({ javaScriptEnabled: false });
    const { page } = v;
    for (const p of ['p1', 'p2', 'p3']) await page.goto(`${base}/product/${p}.html`);
    await page.goto(base + '/');
    is(await h1(page), 'Still thinking about shoes?', 'no JavaScript: the page is personalized all the same');
    ok(await page.$('#lc-popup'), 'the popup markup is there');
    is(await visible(page), false, 'and stays hidden');
    const vid = await v.vid();
    const prof = await hgetall(profileKey(vid));
    is(prof['t:product'], '3', 'Redis: the three product views were recorded server side');
    is(v.beacons.length, 0, 'nothing posted');

    // the popup's form, posted by the browser itself
    await page.goto(base + '/t/form.html');
    await page.fill('input[name=email]', 'nojs@example.com');
    await page.check('input[name=consent]');
    const [resp] = await Promise.all([
        page.waitForResponse((r) => r.url().endsWith('/lifecycle/collect')),
        page.click('button[type=submit]'),
    ]);
    is(resp.status(), 204, 'the form posted without JavaScript is answered 204');
    is(new URL(page.url()).pathname, '/t/form.html', 'and the page stays');
    {
        const p = await until(async () => {
            const p = await hgetall(profileKey(vid));
            return p.email ? p : null;
        }) || {};
        is(p.email, 'nojs@example.com', 'Redis: it is the same opt-in');
    }
    await v.context.close();
});

// --- 6. Global Privacy Control ----------------------------------------------
await scenario('Global Privacy Control', async () => {
    const v = await visitor({ extraHTTPHeaders: { 'Sec-GPC': '1' } }, () => {
        Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true });
    });
    const { page } = v;
    for (const p of ['p1', 'p2', 'p3']) await page.goto(`${base}/product/${p}.html`);
    await page.goto(base + '/');
    is(await page.evaluate(() => navigator.globalPrivacyControl), true, 'navigator.globalPrivacyControl is true');
    is(await v.vid(), null, 'Sec-GPC: no cookie');
    is(await h1(page), 'New season, same good things', 'default content, no popup');
    await page.goto(base + '/t/popup.html');
    await until(async () => (await since(page)) > 350, 3000);
    await exitTop(page);
    is(await visible(page), false, 'a popup in the page is not shown');
    await page.goto(base + '/t/buttons.html');
    await page.click('#add');
    await page.evaluate(() => lc.push(['track', 'purchase', { order: 'G-1' }]));
    await sleep(300);
    is(v.beacons.length, 0, 'nothing is sent: no queued command, no data-lc-track click, no push');
    await v.context.close();
});

// --- 7. consent hook --------------------------------------------------------
await scenario('consent', async () => {
    const v = await visitor();
    const { page } = v;
    await page.goto(base + '/t/consent.html');
    await page.click('#add');
    await sleep(300);
    is(v.beacons.length, 0, 'data-lc-consent-required: nothing before consent');
    await page.evaluate(() => lc.push(['consent', true]));
    ok(await waitBeacon(v, 'e=add_to_cart&id=p7'), 'lc.push([\'consent\', true]): what waited is sent');
    ok(v.bodies().includes('e=custom&name=queued_before_load'), 'the queued command too', v.bodies());
    await page.evaluate(() => lc.push(['consent', false]));
    await page.click('#add');
    await sleep(300);
    is(v.bodies().filter((b) => b === 'e=add_to_cart&id=p7').length, 1, 'consent false: nothing more');
    await v.context.close();
});

// --- 8. the collect URL -----------------------------------------------------
await scenario('collect URL override', async () => {
    const v = await visitor();
    const { page } = v;
    await page.goto(base + '/t/config.html');
    await page.click('#add');
    ok(await until(() => v.beacons.some((b) => b.path === '/custom/collect' && b.body === 'e=add_to_cart&id=p8')),
       'data-lc-collect on the script tag: beacons go there', v.beacons.map((b) => [b.path, b.body]));
    await page.evaluate(() => lc.push(['config', { collect: '/other/collect' }], ['track', 'custom', { name: 'x' }]));
    ok(await until(() => v.beacons.some((b) => b.path === '/other/collect')),
       "lc.push(['config', {collect}]): and then there", v.beacons.map((b) => [b.path, b.body]));
    await v.context.close();
});

// --- 9. touch screens -------------------------------------------------------
await scenario('mobile exit intent', async () => {
    const v = await visitor({ viewport: { width: 390, height: 664 }, isMobile: true, hasTouch: true });
    const { page } = v;
    const scroll = (from, to, steps, pause) => page.evaluate(async ([from, to, steps, pause]) => {
        const room = document.documentElement.scrollHeight - innerHeight;
        const frame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, pause)));
        for (let i = 1; i <= steps; i++) {
            scrollTo(0, room * (from + (to - from) * i / steps));
            await frame();
        }
    }, [from, to, steps, pause]);

    await page.goto(base + '/t/long.html');
    is(await page.evaluate(() => matchMedia('(pointer:coarse)').matches), true, 'a coarse pointer');
    await scroll(0, 0.2, 4, 40);
    await scroll(0.2, 0.05, 3, 20);
    is(await visible(page), false, 'a fast scroll up without having read down: not shown');
    await scroll(0.05, 0.7, 10, 40);
    is(await visible(page), false, 'reading down: not shown');
    await sleep(1200);
    await scroll(0.7, 0.68, 2, 300);
    is(await visible(page), false, 'a little scroll up: not shown');
    await scroll(0.68, 0.35, 4, 20);
    ok(await visible(page), 'read down past 40%, then a fast scroll up: shown');
    ok(await waitBeacon(v, 'e=popup_shown&popup=save-visit'), 'popup_shown sent');

    const d = await visitor();
    await d.page.goto(base + '/t/long.html');
    await d.page.evaluate(async () => {
        const room = document.documentElement.scrollHeight - innerHeight;
        const f = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 20)));
        for (let i = 1; i <= 10; i++) { scrollTo(0, room * 0.07 * i); await f(); }
        for (let i = 1; i <= 4; i++) { scrollTo(0, room * (0.7 - 0.1 * i)); await f(); }
    });
    is(await visible(d.page), false, 'the same on a desktop (fine pointer): not shown');
    await d.context.close();
    await v.context.close();
});

await browser.close();
redis.close();
console.log(`1..${n}`);
console.log(`# ${n - failures} passed, ${failures} failed`);
process.exit(failures ? 1 : 0);
