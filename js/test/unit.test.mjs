// Unit tests of lifecycle.js in node, without a browser: the built file
// (dist/lifecycle.min.js, what the module serves) runs in a vm context
// with a stand-in window, document and navigator, which record what would
// be sent. Run by t/30-js-unit.t (make test), or: node --test test/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import vm from 'node:vm';

const code = readFileSync(new URL('../dist/lifecycle.min.js', import.meta.url), 'utf8');

function element(attrs = {}) {
    return {
        attrs,
        hasAttribute: (n) => n in attrs,
        getAttribute: (n) => (n in attrs ? String(attrs[n]) : null),
        closest(sel) {
            if (sel === '[data-lc-track]') return 'data-lc-track' in attrs ? this : null;
            if (sel === 'a[href]') return this.tagName === 'A' && 'href' in attrs ? this : null;
            return null;
        },
        tagName: attrs.tagName || 'BUTTON',
    };
}

// Loads lifecycle.js into a fresh page; returns what the test looks at.
function load(o = {}) {
    const sent = [];
    const fetched = [];
    const listeners = {};
    const document = {
        currentScript: element(o.script),
        documentElement: element(o.html),
        readyState: 'complete',
        getElementById: () => null,
        addEventListener: (t, f) => (listeners[t] ||= []).push(f),
    };
    const navigator = {};
    if (o.gpc !== undefined) navigator.globalPrivacyControl = o.gpc;
    if (o.beacon !== null) {
        navigator.sendBeacon = (url, body) => {
            sent.push({ url, body: String(body), type: body.constructor.name });
            return o.beacon ?? true;
        };
    }
    const ctx = {
        document, navigator, URLSearchParams, performance,
        fetch: (url, init) => {
            fetched.push({ url, ...init, body: String(init.body) });
            return Promise.resolve({ status: 204 });
        },
    };
    ctx.window = ctx;
    if (o.queue) ctx.lc = o.queue;
    vm.createContext(ctx);
    const run = () => vm.runInContext(code, ctx);
    run();
    return {
        ctx, sent, fetched, listeners, run,
        bodies: () => sent.map((s) => s.body),
        push: (...c) => ctx.lc.push(...c),
    };
}

test('commands queued before the script loaded are replayed, in order', () => {
    const p = load({ queue: [
        ['track', 'add_to_cart', { id: 'p42', qty: 1 }],
        ['track', 'remove_from_cart', { id: 'p7' }],
    ] });
    assert.deepEqual(p.bodies(), ['e=add_to_cart&id=p42&qty=1',
                                  'e=remove_from_cart&id=p7']);
    assert.equal(p.sent[0].url, '/lifecycle/collect', 'default collect URL');
    assert.equal(p.sent[0].type, 'URLSearchParams',
                 'a URLSearchParams body: sent as application/x-www-form-urlencoded');
    assert.equal(p.ctx.lc.length, 0, 'the queue is emptied');
});

test('later pushes run at once', () => {
    const p = load();
    assert.equal(p.sent.length, 0);
    p.push(['track', 'purchase', { order: 'A-1001', value: 99.5, currency: 'EUR' }]);
    assert.deepEqual(p.bodies(), ['e=purchase&value=99.5&currency=EUR&order=A-1001']);
    p.push(['track', 'add_to_cart', { id: 'p1' }], ['track', 'add_to_cart', { id: 'p2' }]);
    assert.equal(p.sent.length, 3, 'several commands in one push');
});

test('config and consent queued before load apply before the queued events', () => {
    const p = load({ queue: [
        ['track', 'custom', { name: 'early' }],
        ['config', { collect: '/shop/collect' }],
    ] });
    assert.deepEqual(p.sent.map((s) => [s.url, s.body]),
                     [['/shop/collect', 'e=custom&name=early']]);
});

test('field encoding: the beacon field names, URL-encoded, nothing else', () => {
    const p = load();
    p.push(['track', 'add_to_cart', { id: 'p 4&2=ü', qty: 2, color: 'red', value: '' }]);
    p.push(['track', 'optin', { email: 'a+b@example.com', consent: true, popup: 'save-visit' }]);
    p.push(['track', 'custom', { name: 'size_guide', id: null, qty: false }]);
    p.push(['track', 'popup_shown', { popup: 'x' }]);
    assert.deepEqual(p.bodies(), [
        'e=add_to_cart&id=p+4%262%3D%C3%BC&qty=2',
        'e=optin&email=a%2Bb%40example.com&consent=1&popup=save-visit',
        'e=custom&name=size_guide',
        'e=popup_shown&popup=x',
    ]);
});

test('each event carries only the fields it may (lifecycle_collect refuses others)', () => {
    const p = load();
    p.push(['track', 'purchase', { id: 'p1', qty: 2, order: 'O-9', value: 5, currency: 'EUR', name: 'n' }]);
    p.push(['track', 'add_to_cart', { id: 'p1', order: 'O-9', name: 'n', popup: 'x', value: 5 }]);
    p.push(['track', 'remove_from_cart', { id: 'p1', qty: 1, value: 5, currency: 'EUR' }]);
    p.push(['track', 'popup_dismissed', { popup: 'x', id: 'p1' }]);
    p.push(['track', 'optin', { email: 'a@example.com', consent: 1, popup: 'x', name: 'n', id: 'p1' }]);
    p.push(['track', 'custom', { name: 'n', id: 'p1', order: 'O', popup: 'x', email: 'a@example.com', consent: 1 }]);
    assert.deepEqual(p.bodies(), [
        'e=purchase&value=5&currency=EUR&order=O-9',
        'e=add_to_cart&id=p1&value=5',
        'e=remove_from_cart&id=p1&qty=1',
        'e=popup_dismissed&popup=x',
        'e=optin&email=a%40example.com&consent=1&popup=x',
        'e=custom&id=p1&order=O&name=n&popup=x',
    ]);
});

test("an event name of the shop's own goes as a custom event", () => {
    const p = load();
    p.push(['track', 'wishlist', { id: 'p3' }]);
    assert.deepEqual(p.bodies(), ['e=custom&id=p3&name=wishlist']);
});

test('a bad command stops nothing', () => {
    const p = load({ queue: [null, ['track'], 42, ['track', 'custom', { name: 'ok' }]] });
    assert.deepEqual(p.bodies(), ['e=custom&name=ok']);
    p.push(undefined, ['nonsense'], ['track', 'custom', { name: 'ok2' }]);
    assert.deepEqual(p.bodies(), ['e=custom&name=ok', 'e=custom&name=ok2']);
});

test('Global Privacy Control: nothing is sent', () => {
    const p = load({ gpc: true, queue: [['track', 'add_to_cart', { id: 'p1' }],
                                        ['consent', true]] });
    p.push(['track', 'purchase', { order: 'X' }]);
    assert.equal(p.sent.length + p.fetched.length, 0);
    assert.equal(p.ctx.lc.length, 0, 'the queue is consumed all the same');
    const q = load({ gpc: false });
    q.push(['track', 'custom', { name: 'n' }]);
    assert.equal(q.sent.length, 1, 'globalPrivacyControl false: sent');
});

test('consent required: events wait for consent true, and go then', () => {
    const p = load({ html: { 'data-lc-consent-required': '' },
                     queue: [['track', 'add_to_cart', { id: 'p1' }]] });
    p.push(['track', 'add_to_cart', { id: 'p2' }]);
    assert.equal(p.sent.length, 0, 'nothing before consent');
    p.push(['consent', true]);
    assert.deepEqual(p.bodies(), ['e=add_to_cart&id=p1', 'e=add_to_cart&id=p2']);
    p.push(['track', 'add_to_cart', { id: 'p3' }]);
    assert.equal(p.sent.length, 3, 'after consent: at once');
    p.push(['consent', false]);
    p.push(['track', 'add_to_cart', { id: 'p4' }]);
    assert.equal(p.sent.length, 3, 'consent withdrawn: nothing more');
});

test('consent false drops what waited; the attribute also works on the script tag', () => {
    const p = load({ script: { 'data-lc-consent-required': '' } });
    p.push(['track', 'custom', { name: 'a' }]);
    p.push(['consent', false]);
    p.push(['consent', true]);
    assert.equal(p.sent.length, 0, 'refused events are not sent later');
    p.push(['track', 'custom', { name: 'b' }]);
    assert.deepEqual(p.bodies(), ['e=custom&name=b']);
});

test('consent false without the attribute stops sending', () => {
    const p = load({ queue: [['consent', false], ['track', 'custom', { name: 'a' }]] });
    assert.equal(p.sent.length, 0);
});

test('collect URL: data-lc-collect on the script tag, then <html>, then config', () => {
    let p = load({ script: { 'data-lc-collect': '/a/collect' },
                   html: { 'data-lc-collect': '/b/collect' } });
    p.push(['track', 'custom', { name: 'x' }]);
    assert.equal(p.sent[0].url, '/a/collect');
    p = load({ html: { 'data-lc-collect': '/b/collect' } });
    p.push(['track', 'custom', { name: 'x' }]);
    assert.equal(p.sent[0].url, '/b/collect');
    p.push(['config', { collect: '/c/collect' }], ['track', 'custom', { name: 'y' }]);
    assert.equal(p.sent[1].url, '/c/collect');
});

test('no sendBeacon, or sendBeacon refusing: fetch, keepalive, same-origin', () => {
    for (const beacon of [null, false]) {
        const p = load({ beacon });
        p.push(['track', 'add_to_cart', { id: 'p1', qty: 3 }]);
        assert.equal(p.fetched.length, 1, `sendBeacon ${beacon}: fetch`);
        const f = p.fetched[0];
        assert.equal(f.url, '/lifecycle/collect');
        assert.equal(f.method, 'POST');
        assert.equal(f.keepalive, true);
        assert.equal(f.credentials, 'same-origin');
        assert.equal(f.body, 'e=add_to_cart&id=p1&qty=3');
    }
});

test('loaded twice: runs once', () => {
    const p = load();
    p.run();
    p.push(['track', 'custom', { name: 'once' }]);
    assert.equal(p.sent.length, 1);
    assert.equal(p.listeners.click.length, 1, 'one click listener');
});

test('data-lc-track attributes: clicked elements send their event', () => {
    const p = load();
    const click = (el) => p.listeners.click.forEach((f) => f({ target: el }));
    click(element({ 'data-lc-track': 'add_to_cart', 'data-lc-id': 'p42',
                    'data-lc-qty': '2', 'data-lc-email': 'no@example.com' }));
    click(element({ 'data-lc-track': 'purchase', 'data-lc-order': 'O-1',
                    'data-lc-value': '10.00', 'data-lc-currency': 'EUR' }));
    click(element({ 'data-lc-track': 'custom', 'data-lc-name': 'size_guide' }));
    click(element({ 'data-lc-track': 'add_to_cart', tagName: 'FORM' }));
    click(element({ 'class': 'no-tracking' }));
    assert.deepEqual(p.bodies(), [
        'e=add_to_cart&id=p42&qty=2',
        'e=purchase&value=10.00&currency=EUR&order=O-1',
        'e=custom&name=size_guide',
    ], 'forms send on submit, not on a click inside them; data-lc-email is not read');
    const submit = (el) => p.listeners.submit.forEach((f) => f({ target: el }));
    submit(element({ 'data-lc-track': 'remove_from_cart', 'data-lc-id': 'p9', tagName: 'FORM' }));
    assert.equal(p.bodies()[3], 'e=remove_from_cart&id=p9');
});

test('not our window.lc: left alone', () => {
    const p = load({ queue: { something: 'else' } });
    assert.equal(p.listeners.click, undefined);
});
