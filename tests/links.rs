//! `Cache::check_links`: the mistakes between readers and writers that
//! compile and do nothing, found among the fns that ran (issue 20): two fns
//! sharing one namespace, a key invalidation with another number of key
//! parts than its reader, an invalidation of a namespace nobody reads here.
//! The first two are also logged as errors, once, naming both fns.

use std::sync::{Arc, Mutex};

use cache_aside::{Cache, LinkProblem, Status, cached, invalidates, with_status};

mod users {
    use super::*;
    #[cached(ns = "by_id", cache = c, skip(c))]
    pub async fn by_id(c: &Cache, id: u32) -> Option<String> {
        Some(format!("user {id}"))
    }
}

mod orders {
    use super::*;
    #[cached(ns = "by_id", cache = c, skip(c))]
    pub async fn by_id(c: &Cache, id: u32) -> Option<String> {
        Some(format!("order {id}"))
    }
}

#[cached(ns = "team", cache = c, skip(c))]
async fn members(c: &Cache, team: u32, page: u32) -> Vec<String> {
    vec![format!("{team}/{page}")]
}

#[invalidates(ns = "team", key(team), cache = c)]
async fn rename_team(c: &Cache, team: u32) -> Result<(), String> {
    let _ = (c, team);
    Ok(())
}

#[invalidates(ns = "team", key(team, page), cache = c)]
async fn edit_page(c: &Cache, team: u32, page: u32) -> Result<(), String> {
    let _ = (c, team, page);
    Ok(())
}

#[invalidates("tema", cache = c)]
async fn misspelt(c: &Cache) -> Result<(), String> {
    let _ = c;
    Ok(())
}

#[invalidates("team", cache = c)]
async fn reset_teams(c: &Cache) -> Result<(), String> {
    let _ = c;
    Ok(())
}

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn memory(prefix: &str) -> Cache {
    Cache::builder().memory().prefix(prefix).build().unwrap()
}

#[tokio::test]
async fn correct_links_pass() {
    let c = memory("links-ok");
    members(&c, 1, 0).await;
    edit_page(&c, 1, 0).await.unwrap();
    reset_teams(&c).await.unwrap();
    assert_eq!(with_status(members(&c, 1, 0)).await.1, Status::Miss);
    assert_eq!(c.check_links(), Ok(()));
}

#[test]
fn two_fns_on_one_namespace_are_found_and_logged_once() {
    use tracing_subscriber::util::SubscriberInitExt;
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let _guard = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish()
        .set_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = memory("links-shared");
    rt.block_on(async {
        for _ in 0..3 {
            users::by_id(&c, 1).await;
            orders::by_id(&c, 1).await;
        }
    });
    let problems = c.check_links().unwrap_err();
    assert_eq!(
        problems,
        [LinkProblem::SharedNamespace {
            namespace: "by_id".into(),
            fns: ["links::users::by_id".into(), "links::orders::by_id".into()],
        }]
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains("`links::users::by_id` and `links::orders::by_id`"),
        "{text}"
    );
}

#[tokio::test]
async fn a_key_invalidation_with_other_parts_is_found() {
    let c = memory("links-parts");
    members(&c, 7, 0).await;
    rename_team(&c, 7).await.unwrap();
    // It really reaches nothing: the entry is still a hit.
    assert_eq!(with_status(members(&c, 7, 0)).await.1, Status::Hit);
    let problems = c.check_links().unwrap_err();
    assert_eq!(
        problems,
        [LinkProblem::KeyParts {
            namespace: "team".into(),
            reader: ("links::members".into(), 2),
            writer: ("links::rename_team".into(), 1),
        }]
    );
    let text = problems[0].to_string();
    assert!(text.contains("reaches none of its entries"), "{text}");
}

#[tokio::test]
async fn a_key_invalidation_before_its_reader_ran_is_found_too() {
    let c = memory("links-parts-order");
    rename_team(&c, 7).await.unwrap();
    members(&c, 7, 0).await;
    assert!(matches!(
        &c.check_links().unwrap_err()[..],
        [LinkProblem::KeyParts { .. }]
    ));
}

#[tokio::test]
async fn an_invalidation_nobody_here_reads_is_found() {
    let c = memory("links-misspelt");
    members(&c, 1, 0).await;
    misspelt(&c).await.unwrap();
    assert_eq!(
        c.check_links().unwrap_err(),
        [LinkProblem::NoReader {
            namespace: "tema".into(),
            writer: "links::misspelt".into(),
        }]
    );
}
