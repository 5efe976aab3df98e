//! Text handling for the offline model: normalisation, light stemming, typo tolerance and a
//! general support-desk lexicon of concepts (objects, symptoms, qualifiers).

use std::collections::BTreeMap;

/// Lowercase words: letters and digits only, apostrophes dropped ("can't" -> "cant").
pub(super) fn words(text: &str) -> Vec<String> {
    let cleaned: String = text
        .chars()
        .filter(|c| *c != '\'' && *c != '’')
        .flat_map(|c| c.to_lowercase())
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    cleaned.split_whitespace().map(str::to_string).collect()
}

/// True when `a` is `b` with two adjacent letters swapped (a common typo), for words of 5+ letters.
pub(super) fn transposed(a: &str, b: &str) -> bool {
    let (x, y): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if x.len() != y.len() || x.len() < 5 {
        return false;
    }
    let diff: Vec<usize> = (0..x.len()).filter(|&i| x[i] != y[i]).collect();
    diff.len() == 2
        && diff[1] == diff[0] + 1
        && x[diff[0]] == y[diff[1]]
        && x[diff[1]] == y[diff[0]]
}

/// Light suffix stripping so that "arrives", "arrived", "arriving" and "arrive" meet.
pub(super) fn stem(w: &str) -> String {
    let n = w.chars().count();
    let cut = |k: usize| w.chars().take(n - k).collect::<String>();
    let s = if n > 5 && w.ends_with("ing") {
        cut(3)
    } else if n > 4 && (w.ends_with("ed") || w.ends_with("es")) {
        cut(2)
    } else if n > 3 && w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") {
        cut(1)
    } else {
        w.to_string()
    };
    let m = s.chars().count();
    if m > 4 && s.ends_with('e') {
        s.chars().take(m - 1).collect()
    } else {
        s
    }
}

pub(super) const STOPWORDS: &[&str] = &[
    "a", "about", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at",
    "be", "been", "but", "by", "can", "cant", "could", "did", "do", "does", "dont", "for", "from",
    "get", "got", "had", "has", "have", "hello", "help", "hey", "hi", "how", "i", "if", "im", "in",
    "is", "it", "its", "ive", "just", "me", "my", "no", "not", "now", "of", "on", "or", "our",
    "please", "pls", "re", "so", "still", "thanks", "that", "the", "their", "then", "there",
    "this", "to", "up", "was", "we", "what", "when", "why", "will", "with", "would", "you", "your",
    "team", "issue", "problem", "hola", "hallo", "bonjour", "de", "la", "el", "le", "und", "die",
    "der", "que", "en", "et", "ich", "mi", "je", "um",
];

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) enum Kind {
    Object,
    Symptom,
    Qualifier,
}

/// A concept: canonical name, kind, weight and the words/phrases that express it.
/// A term starting with '=' must match the exact word, not just its stem.
/// Terms are separated by '|'; words inside a term by spaces.
pub(super) struct Concept(&'static str, Kind, f64, &'static str);

use Kind::Qualifier as Q;
pub(super) use Kind::{Object as O, Symptom as S};
pub(super) static LEXICON: &[Concept] = &[
    Concept(
        "verification code",
        O,
        3.0,
        "code|otp|passcode|2fa|mfa|sms|verification|two factor|one time|codigo|código|bestätigungscode|sms code|code sms",
    ),
    Concept(
        "login",
        O,
        1.5,
        "login|log in|logging in|sign in|signin|logon|anmelden|connecter|entrar",
    ),
    Concept(
        "password reset link",
        O,
        3.0,
        "password|reset|contraseña|contrasena|passwort|mot de passe|réinitialisation|restablecer",
    ),
    Concept(
        "card",
        O,
        2.0,
        "card|tarjeta|karte|carte|cartão|cartao|atm|terminal|contactless",
    ),
    Concept(
        "payment",
        O,
        1.5,
        "payment|charge|=charged|debited|billed|transaction|purchase|abbuchung|abgebucht|cobrado|cobro|cobrança|débité|prélèvement|cobrados",
    ),
    Concept(
        "export",
        O,
        3.0,
        "export|csv|download|report|spreadsheet|exportación|exportacion|ledger",
    ),
    Concept(
        "webhook",
        O,
        3.5,
        "webhook|callback|event delivery|events|endpoint",
    ),
    Concept(
        "file",
        O,
        2.5,
        "file|folder|document|receipts|dateien|fichiers|archivos|arquivos",
    ),
    Concept(
        "sync",
        O,
        1.0,
        "sync|synced|synchronization|synchronisierung|synchronisation",
    ),
    Concept("app", O, 1.0, "app|application|aplicativo|aplicación"),
    Concept(
        "payout",
        O,
        3.5,
        "payout|settlement|repasse|transferred to my account|transferencias|funds from",
    ),
    Concept(
        "fee",
        O,
        3.0,
        "fee|markup|pricing|commission|gebühren|frais|tarifa|comisión",
    ),
    Concept(
        "screen reader",
        O,
        3.5,
        "screen reader|voiceover|talkback|accessibility|accessible|blind|low vision|assistive|keyboard|font size|visually impaired",
    ),
    Concept("dark mode", O, 4.0, "dark mode|dark theme|night mode|dark"),
    Concept(
        "personal data",
        O,
        3.0,
        "gdpr|dsgvo|rgpd|personal data|my data|my information|personenbezogenen|données personnelles|datos personales",
    ),
    Concept(
        "refund",
        O,
        2.0,
        "refund|reembolso|rückerstattung|remboursement",
    ),
    Concept(
        "subscription",
        O,
        2.0,
        "subscription|membership|plan renewal",
    ),
    Concept(
        "order delivery",
        O,
        2.0,
        "delivery|shipping|parcel|package|tracking number|courier",
    ),
    Concept(
        "invoice",
        O,
        2.0,
        "invoice|receipt|factura|rechnung|facture",
    ),
    Concept("notification", O, 1.5, "notification|push|alert"),
    Concept("email", O, 1.0, "email|e mail|inbox"),
    Concept(
        "account",
        O,
        0.8,
        "account|profile|cuenta|konto|compte|conta",
    ),
    Concept("battery", O, 2.0, "battery|drain|overheat"),
    Concept("page", O, 0.6, "page|website|site|dashboard|button"),
    Concept(
        "not received",
        S,
        3.0,
        "not received|never received|not receiving|didnt receive|dont receive|never arrive|never arrives|never arrived|not arriving|doesnt arrive|didnt arrive|never come|never comes|doesnt come|not coming|never show up|never shows up|not delivered|no text|not getting|dont get|get nothing|nothing arrives|zero messages|never got|didnt get|no code|no otp|no sms|no llega|no me llega|keinen|ne reçois|não recebo|nao recebo|não chega|not coming through|where is my",
    ),
    Concept(
        "duplicate",
        S,
        3.0,
        "twice|double|duplicate|duplicated|two times|2 times|2x|identical|same amount|zweimal|dos veces|deux fois|duas vezes|em dobro|doppelte|two charges|captured twice",
    ),
    Concept(
        "declined",
        S,
        3.0,
        "declined|decline|refused|rejected|not permitted|abgelehnt|rechazada|rechazan|refusée|recusado|doesnt work anywhere|blocked",
    ),
    Concept(
        "timeout",
        S,
        3.0,
        "timeout|times out|timed out|time out|504|spins|spinner|loading forever|keeps loading|never finishes|stuck on|loads forever|never gives me|nunca termina|se queda cargando|aboutit|empty csv|0 bytes",
    ),
    Concept(
        "delay",
        S,
        2.5,
        "delay|delayed|late|lagging|lag|slow|slower|in transit|taking a week|takes forever|hasnt reached|used to take|havent been transferred|atraso|atrasados|retraso|verspätung|verspätet|retard",
    ),
    Concept(
        "deleted",
        S,
        3.5,
        "=deleted|disappeared|disappearing|vanished|gone|lost|=removed|overwrote|data loss|verschwunden|supprimé|ate my|missing now",
    ),
    Concept(
        "crash",
        S,
        3.5,
        "crash|crashes|crashing|force closing|force close|closes itself|shuts down|wont start|wont open|doesnt even open|not opening|se cierra|fecha sozinho|white screen",
    ),
    Concept(
        "expired",
        S,
        3.0,
        "expired|expire|invalid|dead|caducado|expiré|abgelaufen",
    ),
    Concept(
        "unclear",
        S,
        2.5,
        "unclear|confusing|confused by|dont understand|explain|hidden|unexpected|what is this|breakdown|verstehe",
    ),
    Concept(
        "unreadable",
        S,
        2.5,
        "unreadable|cant read|invisible|contrast|white text|black text|tiny|doesnt announce|read as|disappear",
    ),
    Concept(
        "deletion request",
        S,
        3.0,
        "=delete|deletion|erase|erased|erasure|=remove|forgotten|close my account|löschung|suppression|article 17",
    ),
    Concept(
        "locked out",
        S,
        2.0,
        "locked out|cant log in|cannot log in|cant sign in|cant get into|no access|cant login",
    ),
    Concept(
        "not working",
        S,
        1.0,
        "not working|doesnt work|broken|error|fails|failed|bug|wrong|stopped working",
    ),
    Concept(
        "abroad",
        Q,
        1.0,
        "abroad|overseas|foreign|travel|travelling|traveling|holiday|vacation|trip|ausland|étranger|exterior|viaje",
    ),
];

/// Objects each symptom naturally goes with (general support knowledge, not dataset knowledge).
pub(super) fn compatible(symptom: &str, object: &str) -> bool {
    let objects: &[&str] = match symptom {
        "not received" => &[
            "verification code",
            "email",
            "notification",
            "refund",
            "payout",
            "order delivery",
            "webhook",
            "invoice",
        ],
        "duplicate" => &[
            "payment",
            "subscription",
            "order delivery",
            "email",
            "notification",
            "invoice",
        ],
        "declined" => &["card", "payment"],
        "timeout" => &["export", "page", "webhook", "login"],
        "delay" => &[
            "webhook",
            "payout",
            "refund",
            "order delivery",
            "notification",
            "verification code",
            "email",
        ],
        "deleted" => &["file", "personal data", "account", "email"],
        "crash" => &["app", "sync"],
        "expired" => &[
            "password reset link",
            "verification code",
            "card",
            "subscription",
        ],
        "unclear" => &["fee", "payment", "invoice", "subscription"],
        "unreadable" => &["dark mode", "screen reader", "app", "page"],
        "deletion request" => &["personal data", "account"],
        "locked out" => &["login", "account", "verification code"],
        _ => return true,
    };
    objects.contains(&object)
}

/// Label for a (symptom, object) pair; either may be missing.
pub(super) fn compose_label(symptom: Option<&str>, object: Option<&str>, abroad: bool) -> String {
    let o = object.unwrap_or("");
    match (symptom, object) {
        (None, Some(o)) => format!("{o} issue"),
        (None, None) => "general inquiry".to_string(),
        (Some("duplicate"), _) => format!("duplicate {}", if o.is_empty() { "payment" } else { o }),
        (Some("unclear"), _) => format!("unclear {}", if o.is_empty() { "charges" } else { o }),
        (Some(s), None) => match s {
            "not received" => "message not received".into(),
            "declined" => "payment declined".into(),
            "timeout" => "request timeout".into(),
            "delay" => "processing delay".into(),
            "deleted" => "data loss".into(),
            "crash" => "app crash".into(),
            "expired" => "link expired".into(),
            "unreadable" => "unreadable display".into(),
            "deletion request" => "data deletion request".into(),
            "locked out" => "account locked out".into(),
            _ => "feature not working".into(),
        },
        (Some(s), Some(o)) => {
            let mut label = format!("{o} {s}");
            if s == "declined" && abroad {
                label.push_str(" abroad");
            }
            label
        }
    }
}

/// Concept scores of a text: occurrences weighted by concept weight, place and position.
pub(super) struct Analysis {
    pub(super) scores: BTreeMap<&'static str, (Kind, f64)>,
    pub(super) content: Vec<String>,
}

pub(super) fn analyze(subject: &str, body: &str) -> Analysis {
    let mut scores: BTreeMap<&'static str, (Kind, f64)> = BTreeMap::new();
    let mut content = Vec::new();
    for (text, place_weight) in [(subject, 2.0), (body, 1.0)] {
        let raw = words(text);
        let stems: Vec<String> = raw.iter().map(|w| stem(w)).collect();
        let n = raw.len().max(1) as f64;
        for Concept(name, kind, weight, terms) in LEXICON {
            for term in terms.split('|') {
                let (exact, term) = match term.strip_prefix('=') {
                    Some(t) => (true, t),
                    None => (false, term),
                };
                let tw: Vec<&str> = term.split(' ').collect();
                let ts: Vec<String> = tw.iter().map(|w| stem(w)).collect();
                if tw.len() > raw.len() {
                    continue;
                }
                for i in 0..=raw.len() - tw.len() {
                    let hit = (0..tw.len()).all(|k| {
                        raw[i + k] == tw[k]
                            || (!exact && (stems[i + k] == ts[k] || transposed(&raw[i + k], tw[k])))
                    });
                    if hit {
                        let position = 1.5 - 0.5 * (i as f64 / n);
                        let e = scores.entry(name).or_insert((*kind, 0.0));
                        e.1 += weight * place_weight * position;
                    }
                }
            }
        }
        content.extend(
            raw.into_iter()
                .filter(|w| !STOPWORDS.contains(&w.as_str()) && w.chars().count() > 2),
        );
    }
    Analysis { scores, content }
}

impl Analysis {
    pub(super) fn best(&self, kind: Kind) -> Vec<(&'static str, f64)> {
        let mut v: Vec<(&'static str, f64)> = self
            .scores
            .iter()
            .filter(|(_, (k, _))| *k == kind)
            .map(|(n, (_, s))| (*n, *s))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }
    /// The most salient (symptom, object) pair.
    pub(super) fn pair(&self) -> (Option<&'static str>, Option<&'static str>) {
        let symptoms = self.best(S);
        let objects = self.best(O);
        let mut best: (f64, Option<&'static str>, Option<&'static str>) = (0.0, None, None);
        for &(s, ss) in symptoms.iter().chain([("", 0.0)].iter()) {
            for &(o, os) in objects.iter().chain([("", 0.0)].iter()) {
                let fit = if s.is_empty() || o.is_empty() || compatible(s, o) {
                    1.0
                } else {
                    0.3
                };
                let score = ss + os * fit;
                if score > best.0 {
                    best = (
                        score,
                        (!s.is_empty()).then_some(s),
                        (!o.is_empty()).then_some(o),
                    );
                }
            }
        }
        (best.1, best.2)
    }
    pub(super) fn has(&self, name: &str) -> bool {
        self.scores.contains_key(name)
    }
}
