//! The live page (SPEC 5) in a real browser: headless Chromium, driven over WebDriver by
//! `fantoccini` through a chromedriver each test starts on a free port, against a real node.
//! Each test asserts what a user sees (DOM queries, polled against a deadline) and leaves a
//! screenshot of its final page in `target/browser-screenshots/<test>.png`.

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde_json::{json, Value};

use crate::support::*;

mod library;
mod session;

use session::{run, save_screenshot, screenshots, Browser, Screen};

/// Runs `script` (a function body: `return ...`) in the page and hands back its value.
async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, Vec::new()).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
}

/// Waits (polling, at most [`PATIENCE`]) until `script` returns `true`; fails with what the page
/// shows otherwise.
async fn until(c: &Client, what: &str, script: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        // A script may fail while the page is (re)loading: that is "not yet".
        if let Ok(Value::Bool(true)) = c.execute(script, Vec::new()).await {
            return;
        }
        if Instant::now() > deadline {
            let shown = js(c, "return document.body.innerText").await;
            panic!(
                "not seen within {PATIENCE:?}: {what}\nthe page shows:\n{}",
                shown.as_str().unwrap_or("")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn open(c: &Client, url: &str) {
    c.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
}

/// The feed as shown, newest first: `[seq, sentence]` per entry.
async fn feed(c: &Client) -> Vec<(u64, String)> {
    let entries = js(
        c,
        "return [...document.querySelectorAll('#feed > li')]
            .map(li => [Number(li.dataset.seq), li.querySelector('.text').textContent]);",
    )
    .await;
    let entries = entries.as_array().cloned().unwrap_or_default();
    entries
        .iter()
        .map(|e| (e[0].as_u64().unwrap_or(0), e[1].as_str().unwrap_or("").to_owned()))
        .collect()
}

/// One side's line-up as shown: "number name" per player on the pitch.
async fn lineup(c: &Client, side: &str) -> Vec<String> {
    let script = format!(
        "return [...document.querySelectorAll('#{side}-lineup > li')]
            .map(li => li.dataset.number + ' ' + li.querySelector('.pname').textContent);"
    );
    let players = js(c, &script).await;
    players.as_array().into_iter().flatten().map(|p| p.as_str().unwrap_or("").to_owned()).collect()
}

async fn text_of(c: &Client, css: &str) -> String {
    let el = c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    el.text().await.unwrap_or_else(|e| panic!("{css}: {e}"))
}

/// Waits until the page says it follows the match live (`transport`: `ws` or `sse`), after at
/// least `connects` connections.
async fn until_live(c: &Client, transport: &str, connects: u32) {
    let script = format!(
        "const conn = document.getElementById('conn');
         return conn.dataset.state === 'live' && conn.dataset.transport === '{transport}'
             && Number(conn.dataset.connects) >= {connects};"
    );
    until(c, &format!("live over {transport} (connection {connects})"), &script).await;
}

/// What a screen-reader user and a phone user rely on, checked on the page as it is: one `h1`,
/// a language, landmarks, labelled sections, links with text, a polite live feed (on a match),
/// readable contrast, no sideways scrolling, and nothing loaded from another host.
async fn check_basics(c: &Client) {
    let report = js(
        c,
        r#"
        const luminance = (rgb) => {
          const [r, g, b] = rgb.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
          return 0.2126 * r + 0.7152 * g + 0.0722 * b;
        };
        const parse = (css) => (css.match(/[\d.]+/g) || []).map(Number);
        const background = (el) => {
          for (; el; el = el.parentElement) {
            const c = parse(getComputedStyle(el).backgroundColor);
            if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
          }
          return [255, 255, 255];
        };
        const lowContrast = [];
        for (const el of document.querySelectorAll('main *, header *')) {
          const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
          if (!own || el.closest('.sr-only, [hidden]') || !el.getClientRects().length) continue;
          const fg = luminance(parse(getComputedStyle(el).color).slice(0, 3));
          const bg = luminance(background(el));
          const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
          if (ratio < 4.5) lowContrast.push(`${el.className || el.tagName}: ${ratio.toFixed(2)} "${el.textContent.trim().slice(0, 30)}"`);
        }
        const feed = document.getElementById('feed');
        const sections = [...document.querySelectorAll('section')];
        return {
          lang: document.documentElement.lang,
          h1: document.querySelectorAll('h1').length,
          main: document.querySelectorAll('main').length,
          banner: document.querySelectorAll('body > header').length,
          unlabelledSections: sections.filter((s) => {
            const id = s.getAttribute('aria-labelledby');
            return !id || !document.getElementById(id) || !document.getElementById(id).textContent.trim();
          }).length,
          linksWithoutText: [...document.querySelectorAll('a')].filter((a) => !a.textContent.trim()).length,
          feed: feed ? { tag: feed.tagName, live: feed.getAttribute('aria-live') } : null,
          status: document.getElementById('conn').getAttribute('role'),
          viewport: (document.querySelector('meta[name=viewport]') || {}).content || '',
          sideways: document.documentElement.scrollWidth > window.innerWidth,
          lowContrast,
          elsewhere: performance.getEntriesByType('resource').map((e) => e.name)
            .filter((n) => new URL(n).host !== location.host),
        };
        "#,
    )
    .await;
    assert_eq!(report["lang"], "en", "{report:#}");
    assert_eq!(report["h1"], 1, "exactly one h1: {report:#}");
    assert_eq!(report["main"], 1, "{report:#}");
    assert_eq!(report["banner"], 1, "{report:#}");
    assert_eq!(report["unlabelledSections"], 0, "{report:#}");
    assert_eq!(report["linksWithoutText"], 0, "{report:#}");
    assert_eq!(report["status"], "status", "the connection indicator is a status: {report:#}");
    assert!(report["viewport"].as_str().unwrap_or("").contains("width=device-width"), "{report:#}");
    assert_eq!(report["sideways"], false, "no sideways scrolling: {report:#}");
    assert_eq!(report["lowContrast"], json!([]), "text below 4.5:1 contrast: {report:#}");
    assert_eq!(report["elsewhere"], json!([]), "nothing from another host: {report:#}");
    if !report["feed"].is_null() {
        assert_eq!(report["feed"], json!({"tag": "OL", "live": "polite"}), "{report:#}");
    }
}

#[tokio::test]
async fn the_page_and_its_assets_come_from_the_binary_with_their_types_and_etags() {
    let s = TestServer::start().await;
    let http = reqwest::Client::new();
    let get = |path: &str, etag: Option<&str>| {
        let mut request = http.get(format!("{}{path}", s.base));
        if let Some(tag) = etag {
            request = request.header("if-none-match", tag);
        }
        request.send()
    };
    let page = get("/?mid=elp-tig-2011-09-10", None).await.expect("GET /");
    let csp = page.headers()["content-security-policy"].to_str().unwrap_or("").to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    let html = page.text().await.expect("the page");
    // The page names its script and style sheet by their content.
    let asset = |name: &str| {
        let at =
            html.find(&format!("/assets/{name}?v=")).unwrap_or_else(|| panic!("{name} in {html}"));
        html[at..].split('"').next().unwrap_or_default().to_owned()
    };
    let (script, model, style) = (asset("app.js"), asset("model.js"), asset("app.css"));
    // The client library (SPEC 12), by its hash too.
    let at = html.find("/client.js?v=").unwrap_or_else(|| panic!("client.js in {html}"));
    let client = html[at..].split('"').next().unwrap_or_default().to_owned();
    for (path, content_type, cache) in [
        ("/", "text/html; charset=utf-8", "no-cache"),
        ("/?mid=elp-tig-2011-09-10", "text/html; charset=utf-8", "no-cache"),
        (script.as_str(), "text/javascript; charset=utf-8", "public, max-age=300"),
        (model.as_str(), "text/javascript; charset=utf-8", "public, max-age=300"),
        (style.as_str(), "text/css; charset=utf-8", "public, max-age=300"),
        ("/assets/app.js", "text/javascript; charset=utf-8", "public, max-age=300"),
        (client.as_str(), "text/javascript; charset=utf-8", "public, max-age=300"),
        ("/client.js", "text/javascript; charset=utf-8", "public, max-age=300"),
    ] {
        let answer = get(path, None).await.expect("GET");
        assert_eq!(answer.status(), reqwest::StatusCode::OK, "{path}");
        let headers = answer.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["cache-control"], cache, "{path}");
        let etag = headers["etag"].to_str().expect("an ETag").to_owned();
        assert!(!answer.bytes().await.expect("body").is_empty(), "{path}");
        let again = get(path, Some(&etag)).await.expect("GET again");
        assert_eq!(again.status(), reqwest::StatusCode::NOT_MODIFIED, "{path}");
        assert!(again.bytes().await.expect("body").is_empty(), "{path}");
    } // The library is the repository's clients/js/client.js, byte for byte, and a page of any
      // other site may import it (CORS).
    let library = http
        .get(format!("{}/client.js", s.base))
        .header("origin", "https://scores.example.com")
        .send()
        .await
        .expect("GET /client.js");
    assert_eq!(library.headers()["access-control-allow-origin"], "*");
    let want = include_str!("../../clients/js/client.js");
    assert_eq!(library.text().await.expect("the library"), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_shows_a_new_match_with_live_ones_first() {
    run("the_list_shows_a_new_match_with_live_ones_first", Screen::Desktop, |c| async move {
        let s = TestServer::start().await;
        // Created first, and first by id: the list still puts the live one above it.
        let upcoming = s.create_match("aaa", "bbb", "2030-05-01").await;
        let live = s.started_match().await;
        open(&c, &format!("{}/", s.base)).await;
        until(
            &c,
            "both matches listed",
            "return document.querySelectorAll('a[data-mid]').length === 2",
        )
        .await;
        let cards = js(
            &c,
            "return [...document.querySelectorAll('a[data-mid]')].map(a => [a.dataset.mid,
                a.getAttribute('href'), a.querySelector('.tag').textContent,
                a.querySelector('.card-score').textContent]);",
        )
        .await;
        assert_eq!(cards[0][0], live.as_str(), "the live match first: {cards:#}");
        assert_eq!(cards[0][1], format!("/?mid={live}"), "{cards:#}");
        assert_eq!(cards[0][2], "Live · 1st half", "{cards:#}");
        assert_eq!(cards[0][3], "0–0", "{cards:#}");
        assert_eq!(cards[1][0], upcoming.as_str(), "{cards:#}");
        assert_eq!(cards[1][1], format!("/?mid={upcoming}"), "{cards:#}");
        assert_eq!(cards[1][2], "Not started", "{cards:#}");
        check_basics(&c).await;
        let list = screenshots().join("the_list_shows_a_new_match_with_live_ones_first-list.png");
        save_screenshot(&c, &list).await;

        // Following the link opens that match.
        let link = c.find(Locator::Css(&format!("a[data-mid='{live}']"))).await.expect("link");
        link.click().await.expect("click");
        until(&c, "the match view", "return !!document.getElementById('fixture')").await;
        let title = text_of(&c, "h1").await;
        assert!(title.contains("elp") && title.contains("tig"), "{title:?}");
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goal_changes_the_score_on_the_match_page() {
    run("a_goal_changes_the_score_on_the_match_page", Screen::Desktop, |c| async move {
        let s = TestServer::start().await;
        let id = s.started_match().await;
        s.publish(&id, "corner", json!({"team": "elp"})).await;
        open(&c, &format!("{}/?mid={id}", s.base)).await;
        until_live(&c, "ws", 1).await;
        until(&c, "the past events", "return document.querySelectorAll('#feed > li').length === 2")
            .await;
        assert_eq!(
            feed(&c).await,
            vec![(2, "Corner for elp".to_owned()), (1, "Kick-off".to_owned())]
        );
        assert_eq!(text_of(&c, "#home-score").await, "0");
        assert_eq!(text_of(&c, "#visit-score").await, "0");
        assert_eq!(text_of(&c, "#period").await.to_lowercase(), "1st half");

        s.publish(&id, "goal", json!({"team": "tig", "player": 7})).await;
        until(
            &c,
            "the goal on the scoreboard",
            "return document.getElementById('visit-score').textContent === '1'",
        )
        .await;
        assert_eq!(text_of(&c, "#home-score").await, "0");
        let shown = feed(&c).await;
        assert_eq!(shown[0], (3, "Goal for tig: Luna (7)".to_owned()), "{shown:?}");
        assert_eq!(shown.len(), 3, "{shown:?}");
        // The clock runs from the period's start.
        let clock = text_of(&c, "#clock").await;
        assert!(clock.len() == 5 && clock.starts_with("00:"), "{clock:?}");
        check_basics(&c).await;
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_red_card_takes_the_player_off_the_line_up_on_a_phone_over_sse() {
    let name = "a_red_card_takes_the_player_off_the_line_up_on_a_phone_over_sse";
    run(name, Screen::Phone, |c| async move {
        let s = TestServer::start().await;
        let id = s.started_match().await;
        // SSE on purpose: the path a browser takes when no WebSocket gets through.
        open(&c, &format!("{}/?mid={id}&transport=sse", s.base)).await;
        until_live(&c, "sse", 1).await;
        assert_eq!(lineup(&c, "home").await, ["18 Fernandez", "25 Albil"]);
        assert_eq!(lineup(&c, "visit").await, ["7 Luna", "10 Morales"]);

        s.publish(&id, "card", json!({"team": "elp", "player": 25, "card": "red"})).await;
        until(
            &c,
            "Albil off the pitch",
            "return document.querySelectorAll('#home-lineup > li').length === 1",
        )
        .await;
        assert_eq!(lineup(&c, "home").await, ["18 Fernandez"]);
        s.publish(
            &id,
            "substitution",
            json!({"team": "tig", "player_out": 7, "player_in": {"number": 9, "name": "Maggiolo"}}),
        )
        .await;
        until(
            &c,
            "the substitute on",
            "return document.querySelector('#visit-lineup').textContent.includes('Maggiolo')",
        )
        .await;
        assert_eq!(lineup(&c, "visit").await, ["9 Maggiolo", "10 Morales"]);
        let shown = feed(&c).await;
        assert_eq!(
            shown,
            vec![
                (3, "Substitution for tig: Maggiolo (9) for Luna (7)".to_owned()),
                (2, "Red card: Albil (25), elp".to_owned()),
                (1, "Kick-off".to_owned()),
            ]
        );
        check_basics(&c).await;
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_event_reads_in_words_through_to_full_time() {
    run(
        "every_kind_of_event_reads_in_words_through_to_full_time",
        Screen::Desktop,
        |c| async move {
            let s = TestServer::start().await;
            let new = json!({"home": "elp", "visit": "tig", "start_date": "2011-09-10",
            "home_name": "Estudiantes"});
            let (status, body) = s.send(reqwest::Method::POST, "/1/matches", Some(new)).await;
            assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
            let id = "elp-tig-2011-09-10";
            s.publish(id, "comment", json!({"text": "Sunny in La Plata"})).await;
            // Opened before kick-off: the rest arrives live.
            open(&c, &format!("{}/?mid={id}", s.base)).await;
            until_live(&c, "ws", 1).await;
            assert_eq!(text_of(&c, "#period").await.to_lowercase(), "kick-off sat, sep 10, 2011");
            assert_eq!(feed(&c).await, [(1, "Sunny in La Plata".to_owned())]);
            let events = json!([
                {"kind": "start", "data": start_data()},
                {"kind": "shot", "data": {"team": "tig", "player": 7}},
                {"kind": "save", "data": {"team": "elp", "player": 25}},
                {"kind": "goal", "data": {"team": "tig", "player": 7}},
                {"kind": "goal", "data": {"team": "elp", "player": 7, "player_team": "tig"}},
                {"kind": "corner", "data": {"team": "elp"}},
                {"kind": "goalkick", "data": {"team": "tig"}},
                {"kind": "offside", "data": {"team": "tig", "player": 10}},
                {"kind": "foul", "data": {"team": "elp", "player": 18}},
                {"kind": "penalty", "data": {"team": "tig"}},
                {"kind": "freekick", "data": {"team": "elp"}},
                {"kind": "card", "data": {"team": "elp", "player": 18, "card": "yellow"}},
                {"kind": "card", "data": {"team": "elp", "player": 25, "card": "red"}},
                {"kind": "substitution", "data": {"team": "tig", "player_out": 7,
                    "player_in": {"number": 9, "name": "Maggiolo"}}},
                {"kind": "throwin", "data": {"team": "tig"}},
                {"kind": "halftime_start"},
                {"kind": "halftime_stop"},
                {"kind": "extratime"},
                {"kind": "halftime_start"},
                {"kind": "halftime_stop"},
                {"kind": "penalties"},
                {"kind": "stop"},
            ]);
            let (status, body) = s.post_events(id, events).await;
            assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
            until(
                &c,
                "the final whistle",
                "return document.getElementById('conn').dataset.state === 'ended'",
            )
            .await;
            let shown = feed(&c).await;
            let want = [
                "Full time",
                "Penalty shoot-out",
                "Second half of extra time under way",
                "Half-time in extra time",
                "Extra time begins",
                "Second half under way",
                "Half-time",
                "Throw-in for tig",
                "Substitution for tig: Maggiolo (9) for Luna (7)",
                "Red card: Albil (25), Estudiantes",
                "Yellow card: Fernandez (18), Estudiantes",
                "Free kick for Estudiantes",
                "Penalty for tig",
                "Foul by Estudiantes: Fernandez (18)",
                "Offside against tig: Morales (10)",
                "Goal kick for tig",
                "Corner for Estudiantes",
                "Goal for Estudiantes: own goal by Luna (7), tig",
                "Goal for tig: Luna (7)",
                "Save by Estudiantes: Albil (25)",
                "Shot by tig: Luna (7)",
                "Kick-off",
                "Sunny in La Plata",
            ];
            let want: Vec<(u64, String)> = want
                .iter()
                .zip((1..=23).rev())
                .map(|(text, seq)| (seq, text.to_string()))
                .collect();
            assert_eq!(shown, want);
            // Each dated in match time (all within a minute of each period's start).
            let minutes = js(
                &c,
                "return [...document.querySelectorAll('#feed .minute')].map(m => m.textContent);",
            )
            .await;
            let mut want = vec!["FT", "Pens", "106'", "HT", "91'", "46'", "HT"];
            want.extend(["1'"; 15]);
            want.push("");
            assert_eq!(minutes, json!(want));
            assert_eq!(text_of(&c, "#period").await.to_lowercase(), "full time");
            assert_eq!(text_of(&c, "#home-score").await, "1");
            assert_eq!(text_of(&c, "#visit-score").await, "1");
            assert_eq!(js(&c, "return document.getElementById('clock').hidden").await, true);
            assert_eq!(text_of(&c, "#conn").await, "Ended");
            s
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_comes_back_by_itself_after_a_restart_and_shows_every_event_once() {
    let name = "the_page_comes_back_by_itself_after_a_restart_and_shows_every_event_once";
    run(name, Screen::Desktop, |c| async move {
        let s = TestServer::start_with(|c| c.retry_after_ms = 50).await;
        let id = s.started_match().await;
        s.publish(&id, "corner", json!({"team": "elp"})).await;
        s.publish(&id, "shot", json!({"team": "tig", "player": 10})).await;
        open(&c, &format!("{}/?mid={id}", s.base)).await;
        until_live(&c, "ws", 1).await;
        s.publish(&id, "goal", json!({"team": "tig", "player": 7})).await;
        until(&c, "the live goal", "return document.querySelectorAll('#feed > li').length === 4")
            .await;

        // The node goes away (bye shutdown) and comes back on the same store and port.
        let http = s.node.as_ref().expect("node").http_addr;
        let dir = s.stop().await;
        until(
            &c,
            "the page notices",
            "return document.getElementById('conn').dataset.state === 'reconnecting'",
        )
        .await;
        let s = TestServer::start_in(dir, |c| {
            c.http = http;
            c.retry_after_ms = 50;
        })
        .await;
        // Published while the page is still away: it must come with the resume.
        s.publish(&id, "goal", json!({"team": "elp", "player": 25})).await;
        until_live(&c, "ws", 2).await;
        s.publish(&id, "card", json!({"team": "tig", "player": 10, "card": "yellow"})).await;
        until(
            &c,
            "the event after the restart",
            "return document.querySelectorAll('#feed > li').length >= 6",
        )
        .await;
        let shown = feed(&c).await;
        let want: Vec<(u64, String)> = [
            (6, "Yellow card: Morales (10), tig"),
            (5, "Goal for elp: Albil (25)"),
            (4, "Goal for tig: Luna (7)"),
            (3, "Shot by tig: Morales (10)"),
            (2, "Corner for elp"),
            (1, "Kick-off"),
        ]
        .into_iter()
        .map(|(seq, text)| (seq, text.to_owned()))
        .collect();
        assert_eq!(shown, want, "every event exactly once, newest first");
        assert_eq!(text_of(&c, "#home-score").await, "1");
        assert_eq!(text_of(&c, "#visit-score").await, "1");
        s
    })
    .await;
}

/// The screenshots in `docs/`: a match in progress on a laptop and on a phone. Run by hand
/// after a change to the page:
/// `cargo test --test it browser::docs_screenshots -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/page.png and docs/page-phone.png"]
async fn docs_screenshots() {
    let s = TestServer::start().await;
    let (status, body) = s
        .send(
            reqwest::Method::POST,
            "/1/matches",
            Some(json!({
                "home": "elp", "visit": "tig", "start_date": "2011-09-10",
                "home_name": "Estudiantes", "visit_name": "Tigre",
                "division": "Primera División", "stadium": "Estadio Ciudad de La Plata"
            })),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let id = "elp-tig-2011-09-10";
    // The first half of the original's match file (seed/elp-tig-2011-09-10.config).
    let events = json!([
        {"kind": "start", "data": {
            "home_players": [[25, "Albil"], [14, "Mercado"], [2, "Desabato"], [3, "Cellay"],
                [27, "Dominguez"], [11, "Veron"], [10, "Fernandez"], [5, "Sanchez"],
                [19, "Gonzalez"], [18, "Fernandez"], [9, "Boselli"]],
            "visit_players": [[12, "Garcia"], [13, "Casteglione"], [21, "Echeverria"],
                [3, "Blengio"], [15, "Diaz"], [5, "Castano"], [6, "Martinez"], [11, "Leone"],
                [10, "Morales"], [7, "Luna"], [9, "Maggiolo"]]}},
        {"kind": "goal", "data": {"team": "tig", "player": 7}},
        {"kind": "penalty", "data": {"team": "tig", "player": 6}},
        {"kind": "card", "data": {"card": "red", "team": "elp", "player": 25}},
        {"kind": "substitution", "data": {"team": "elp", "player_in": {"number": 21, "name": "Silva"}, "player_out": 18}},
        {"kind": "card", "data": {"card": "yellow", "team": "elp", "player": 11}},
        {"kind": "card", "data": {"card": "yellow", "team": "elp", "player": 2}},
        {"kind": "goal", "data": {"team": "tig", "player": 10}},
        {"kind": "corner", "data": {"team": "elp"}},
        {"kind": "shot", "data": {"team": "elp", "player": 9}},
        {"kind": "save", "data": {"team": "tig", "player": 12}},
        {"kind": "goal", "data": {"team": "tig", "player": 6}},
        {"kind": "comment", "data": {"text": "Tigre in full control in La Plata."}},
    ]);
    let (status, body) = s.post_events(id, events).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    for (screen, file) in [(Screen::Desktop, "page.png"), (Screen::Phone, "page-phone.png")] {
        let browser = Browser::start(screen).await;
        let c = browser.client.clone();
        open(&c, &format!("{}/?mid={id}", s.base)).await;
        until_live(&c, "ws", 1).await;
        until(&c, "every event", "return document.querySelectorAll('#feed > li').length === 13")
            .await;
        save_screenshot(&c, &docs.join(file)).await;
        let _ = c.close().await;
    }
}
