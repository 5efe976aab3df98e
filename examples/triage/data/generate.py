#!/usr/bin/env python3
"""Generate the demo ticket set for the Steadfast support-ticket triage agent.

Fictional company: Brightwell, a small fintech. Five products:
  Brightwell Mobile     - the consumer banking app (iOS / Android)
  Brightwell Dashboard  - the web dashboard for business accounts
  Brightwell Pay API    - the payments API merchants integrate
  Brightwell Card       - the debit card
  Brightwell Sync       - the desktop client that syncs receipts and invoices

Deterministic: fixed seed, no clock, no network. Run from anywhere:
    python3 examples/triage/data/generate.py
Writes tickets.jsonl (what the agent reads) and labels.jsonl (ground truth for
measuring classification quality; the agent never reads it) next to this file.

Every ticket is composed from hand-written fragments (subjects, symptom
sentences in the customer's own words, context details, channel-specific
one-liners, phone-agent summaries, non-English messages), then roughed up:
tone, typos, lowercase, non-native phrasing. On top of that come near-duplicates
(follow-ups, resends, "+1 same here"), tickets mentioning two issues (labelled
with the one the customer leads with) and noise (thanks, spam, feature
requests, off-topic, empty-ish).
"""

import json
import os
import random
from datetime import datetime, timedelta, timezone

SEED = 20261003
TOTAL = 720
NOISE_SHARE = 0.115

MOBILE, DASH, API, CARD, SYNC = (
    "Brightwell Mobile",
    "Brightwell Dashboard",
    "Brightwell Pay API",
    "Brightwell Card",
    "Brightwell Sync",
)
PRODUCTS = [MOBILE, DASH, API, CARD, SYNC]

CHANNELS_BY_PRODUCT = {
    MOBILE: [("app_review", 22), ("chat", 25), ("email", 22), ("social", 14), ("phone", 10), ("web_form", 7)],
    DASH: [("email", 35), ("web_form", 25), ("chat", 25), ("phone", 10), ("social", 5)],
    API: [("email", 40), ("web_form", 25), ("chat", 25), ("social", 7), ("phone", 3)],
    CARD: [("phone", 30), ("chat", 25), ("email", 20), ("social", 15), ("app_review", 5), ("web_form", 5)],
    SYNC: [("email", 40), ("web_form", 25), ("chat", 25), ("phone", 6), ("social", 4)],
}
TIER_BY_PRODUCT = {
    MOBILE: [("free", 70), ("pro", 25), ("enterprise", 5)],
    DASH: [("free", 15), ("pro", 50), ("enterprise", 35)],
    API: [("free", 10), ("pro", 45), ("enterprise", 45)],
    CARD: [("free", 60), ("pro", 35), ("enterprise", 5)],
    SYNC: [("free", 30), ("pro", 50), ("enterprise", 20)],
}

# --- fillers ---------------------------------------------------------------
FILL = {
    "version": ["6.4.0", "6.4.1", "6.4", "v6.4.0", "6.4.2"],
    "carrier": ["Vodafone", "T-Mobile", "O2", "Verizon", "Movistar", "Orange", "EE", "AT&T", "Three"],
    "digits": ["41", "07", "93", "58", "22", "16"],
    "amount": ["$12.40", "$89.99", "$4.50", "€23.10", "£56.00", "$240.00", "€9.99", "$1,250.00", "£14.20", "$37.15"],
    "small": ["$2.50", "€1.99", "$4.95", "£3.00", "$0.89"],
    "merchant": ["Blue Bottle Coffee", "Shell", "Amazon", "Lidl", "Uber", "Spotify", "a hotel", "the pharmacy", "Tesco", "Netflix"],
    "country": ["Spain", "Portugal", "Japan", "Mexico", "Italy", "Thailand", "Canada", "Turkey", "Greece", "Morocco"],
    "city": ["Lisbon", "Barcelona", "Tokyo", "Rome", "Bangkok", "Istanbul", "Athens", "Mexico City", "Marrakesh", "Toronto"],
    "date": ["Monday", "last Friday", "the 14th", "Oct 2", "Sept 28", "yesterday", "the 3rd", "Tuesday"],
    "n": ["3,000", "12,000", "800", "40,000", "1,500", "25,000", "200"],
    "device": ["Pixel 8", "Galaxy S23", "Galaxy A54", "Pixel 7a", "OnePlus 12", "Xiaomi 13", "Galaxy S24"],
    "folder": ["Receipts", "Invoices 2026", "Expenses", "Q3", "Clients", "Contracts"],
    "sversion": ["3.8.1", "3.8.0", "3.9.0-beta", "3.8.2"],
    "ref": ["TX-88213", "TX-90412", "pi_3Nw8aQ", "ch_1Ox2Lk", "TX-77120", "TX-10293"],
    "shop": ["lumenshop", "kettleandco", "parcelpilot", "mintgrocer", "fernfitness"],
    "days": ["6", "8", "10", "5", "12"],
}

NAMES = ["Maria", "James", "Aiko", "Tom", "Priya", "Lukas", "Sofia", "Chen", "Fatima", "Olu", "Grace", "Mateo",
         "Hannah", "Ravi", "Elena", "Dmitri", "Chloe", "Kwame", "Isabel", "Noah", "Yuki", "Sam", "Ines", "Pierre"]

# --- themes ----------------------------------------------------------------
# weight = share of non-noise tickets (roughly); products = (product, weight).
THEMES = {
    "login_code_not_received": dict(
        weight=17.5, products=[(MOBILE, 70), (DASH, 30)], start="2026-10-01",
        subjects=["Verification code never arrives", "Not getting SMS code", "Can't log in - no code",
                  "2FA text missing since update", "Locked out, no verification SMS", "login code??",
                  "One-time passcode not received", "No OTP", "Security code not coming through",
                  "Stuck on the 'enter code' screen", "sms not arriving", "Can't get into my account",
                  "Login broken after update", "Where is my code", "Two-factor not working"],
        symptoms=["Since the last update I never get the verification code when I log in.",
                  "The SMS with the login code just doesn't come. I've tapped 'resend' maybe ten times.",
                  "I'm stuck on the screen asking for the 6-digit code but no text message ever arrives.",
                  "2FA text is missing. Used to get it within seconds, now nothing.",
                  "The one-time passcode never shows up on my phone, so I can't sign in.",
                  "verification message not received, tried wifi and mobile data, restarted phone",
                  "When I try to log in it says a code was sent to my number ending in {digits} but I get nothing.",
                  "The security code takes forever. When it finally arrived 25 minutes later it was already expired.",
                  "I changed nothing on my side but the login codes stopped coming after I updated the app to {version}.",
                  "My husband gets his codes fine but mine never come, and we are on the same carrier.",
                  "I get the sign-in code for the dashboard only sometimes, maybe 1 in 4 attempts.",
                  "I can't sign in because the two-factor SMS is not delivered.",
                  "No text with the code. Checked spam and blocked messages, nothing there.",
                  "I am not receiving the OTP for login since two days, please I need access.",
                  "Every time I open the app it logs me out and wants a code by text, and the text never comes.",
                  "I requested the verification SMS five times in the last hour. Zero messages.",
                  "Logging in on the website asks for the code from my phone, which never arrives, so I'm stuck.",
                  "ever since version {version} the text message with my code doesn't show up",
                  "The app says 'We sent you a code' - no you didn't."],
        details=["My number is correct in the profile, I checked it on the web before I got logged out.",
                 "I'm on {carrier}.", "It started right after the update to version {version}.",
                 "I'm travelling at the moment, not sure if that matters.",
                 "The 'call me instead' option doesn't work either, the call never comes.",
                 "I have bills due tomorrow and no way to see my balance.",
                 "Reinstalled the app, same thing.", "My colleague has the exact same problem on her iPhone.",
                 "Signal is full, I get texts from everyone else."],
        shorts=["no verification code since the update. cant log in at all",
                "SMS code never comes. Locked out of my own money.", "2fa broken?? no text",
                "Update broke login. Code never arrives.", "been waiting 30 min for a login code lol",
                "still no OTP. fix your app", "the code thing doesnt work anymore",
                "Can't log in, the text message with the code never shows up."],
        phone=["Caller unable to log in to the mobile app; states the SMS verification code is not received. Verified phone number on file is correct. Resent code twice during the call, customer did not receive it. Escalated to Tier 2.",
               "Customer reports not receiving 2FA texts since updating to {version}. Carrier {carrier}. Suggested reinstall, no change. Customer upset, needs to pay rent today.",
               "Cust. locked out, no OTP arriving. Wants a callback when fixed.",
               "Caller says login code by SMS never arrives on dashboard sign-in. Tried voice code option, also failed. Ticket created for auth team."],
        foreign=[("es", "No me llega el código de verificación por SMS desde la actualización. No puedo entrar en mi cuenta.", "No llega el código"),
                 ("de", "Ich bekomme seit dem Update keinen Bestätigungscode per SMS mehr und kann mich nicht anmelden.", "Kein SMS-Code"),
                 ("fr", "Je ne reçois plus le code de vérification par SMS depuis la mise à jour, impossible de me connecter.", "Code SMS non reçu"),
                 ("pt", "Não recebo o código de verificação por SMS desde a atualização. Não consigo entrar.", "Código não chega")]),

    "duplicate_charge": dict(
        weight=14.5, products=[(CARD, 45), (API, 30), (MOBILE, 25)],
        subjects=["Charged twice", "Double charge on my card", "Duplicate transaction", "Why was I billed two times?",
                  "Same payment taken twice", "Refund the duplicate please", "two identical charges",
                  "Paid once, charged 2x", "Duplicate captures on orders", "double debit", "Extra charge on statement"],
        symptoms=["I paid {merchant} {amount} once but I see two identical charges on my statement.",
                  "My card was debited twice for the same purchase at {merchant}.",
                  "There are 2 transactions of {amount} a few seconds apart, I only bought one thing.",
                  "The payment went through twice. The app shows both as completed, not pending.",
                  "Our customers report they were charged twice when they refresh the checkout page. The API created two captures for one order.",
                  "I was billed double for my monthly subscription this month.",
                  "Same amount taken out 2 times on {date}.",
                  "We're seeing duplicate payments for the same idempotency key, which should be impossible.",
                  "I tapped pay once, the terminal showed an error, I tapped again, and now I have two charges.",
                  "The {amount} charge appears twice and one of them has not dropped off after 5 days.",
                  "You took {amount} from my account two times for one order.",
                  "Hi, there is a duplicated transaction in my account, same shop same amount same minute.",
                  "My bank statement shows {merchant} twice for {amount}, but I have one receipt.",
                  "Checkout hung, customer clicked again, and your API processed both. Now we have to refund by hand.",
                  "Got charged 2x for the same thing on {date}. Please reverse one of them."],
        details=["Transaction refs: {ref} and {ref}.", "This put my account into overdraft.",
                 "I've attached a screenshot of the statement.", "The merchant says they only received one payment.",
                 "It happened again on {date}, so that's 4 charges now for 2 purchases.",
                 "About 30 of our orders were affected yesterday.", "I need the money back before rent is due."],
        shorts=["charged twice for one coffee. great job", "Double charged AGAIN", "you took my money twice. refund it.",
                "duplicate charge on my card and no reply from support", "why do i see the same payment 2 times"],
        phone=["Customer reports duplicate charge of {amount} at {merchant} on {date}. Confirmed two authorizations in the system. Raised a dispute, advised 3-5 business days.",
               "Caller was debited twice for one purchase. Second transaction still pending. Customer angry about overdraft fee.",
               "Merchant (API customer) says some orders were captured twice after retries. Refs {ref}. Forwarded to payments engineering."],
        foreign=[("es", "Me han cobrado dos veces el mismo pago de {amount}. Quiero que me devuelvan uno.", "Cobro duplicado"),
                 ("de", "Mir wurde derselbe Betrag von {amount} zweimal abgebucht.", "Doppelte Abbuchung"),
                 ("fr", "J'ai été débité deux fois pour le même achat chez {merchant}.", "Double prélèvement"),
                 ("pt", "Fui cobrado duas vezes pela mesma compra.", "Cobrança em dobro")]),

    "card_declined_abroad": dict(
        weight=10, products=[(CARD, 85), (MOBILE, 15)],
        subjects=["Card declined in {country}", "Card not working abroad", "Payment refused while travelling",
                  "declined overseas", "Card blocked on holiday?", "Can't pay anything in {country}",
                  "Travel notice didn't help", "Card rejected at ATM abroad", "URGENT card not working"],
        symptoms=["I'm on holiday in {country} and my card gets declined everywhere, even though I have plenty of money on it.",
                  "Every payment I try at shops here in {city} is refused.",
                  "My card works at home but is rejected as soon as I use it abroad.",
                  "The ATM in {city} refused my card and said 'transaction not permitted'.",
                  "I set the travel notice in the app before leaving and still my card is declined at every terminal.",
                  "Contactless and chip both fail, the terminal just says DECLINED.",
                  "Online payments work but in physical stores in {country} the card is refused.",
                  "I got a text about a suspicious transaction, replied YES it was me, and it still got declined.",
                  "My card does not work in {country}, the restaurant had to call the manager.",
                  "Travelling for work in {city}, card keeps getting rejected for foreign transactions."],
        details=["I'm stuck at the hotel check-in with no other card.", "I fly back home on {date}.",
                 "Balance is {amount}, so it's not the funds.", "The app shows no block on the card.",
                 "This is embarrassing, I had to borrow money from a friend."],
        shorts=["card declined in {city}. on vacation with no money. thanks brightwell",
                "Abroad and my card doesn't work anywhere.", "travel notice on, card still declined. what's the point",
                "card refused at every shop in {country} help"],
        phone=["Customer travelling in {country}; card declined at multiple merchants. No fraud block visible. Travel flag re-added during the call. Customer to retry.",
               "Caller abroad ({city}), ATM withdrawals refused. Checked limits: fine. Escalated to card ops.",
               "Card declined overseas x4 today. Customer very frustrated, stranded without cash."],
        foreign=[("es", "Estoy de viaje en {country} y me rechazan la tarjeta en todas partes.", "Tarjeta rechazada"),
                 ("de", "Meine Karte wird im Ausland überall abgelehnt, obwohl genug Geld drauf ist.", "Karte abgelehnt"),
                 ("fr", "Ma carte est refusée partout à l'étranger.", "Carte refusée"),
                 ("pt", "Meu cartão é recusado em todo lugar no exterior.", "Cartão recusado")]),

    "csv_export_timeout": dict(
        weight=9, products=[(DASH, 100)],
        subjects=["CSV export times out", "Export never finishes", "Can't download transactions report",
                  "Export stuck at 'preparing'", "Report download fails", "504 when exporting",
                  "Need my data for accountant - export broken", "export not working", "Yearly export fails"],
        symptoms=["When I export transactions to CSV for the whole year the page spins and then fails with a timeout.",
                  "The export button just keeps loading and never gives me the file.",
                  "Downloading the report for more than about a month of data gives a 504 Gateway Timeout.",
                  "Export is stuck on 'Preparing your file...' for an hour.",
                  "Small date ranges export fine but anything over {n} rows fails.",
                  "I get an empty .csv (0 bytes) when I export Q3.",
                  "The scheduled monthly export email never arrives anymore, and the manual export errors out.",
                  "our finance team cant pull the ledger, the export request times out after about 60 seconds",
                  "Trying to download all transactions as a spreadsheet, it loads forever then 'something went wrong'."],
        details=["We have about {n} transactions per month.", "Tried Chrome and Firefox.",
                 "Our accountant needs this by {date} for the tax filing.",
                 "Splitting by week works but that is 52 downloads.", "It worked fine last month."],
        shorts=["export to csv has been broken for a week", "dashboard export = infinite spinner",
                "cant download my transactions, export times out"],
        phone=["Business customer cannot export transactions CSV from the dashboard; request times out for ranges over 1 month. Workaround (smaller ranges) offered; customer unhappy.",
               "Caller's accountant needs full-year export, it fails every time with an error after a minute. Escalated."],
        foreign=[("de", "Der CSV-Export bricht immer mit einem Timeout ab.", "CSV-Export Timeout"),
                 ("es", "La exportación a CSV nunca termina, se queda cargando.", "Exportación CSV"),
                 ("fr", "L'export CSV n'aboutit jamais, ça tourne dans le vide.", "Export CSV bloqué")]),

    "webhook_delays": dict(
        weight=8, products=[(API, 100)],
        subjects=["Webhooks delayed", "payment.succeeded events arriving late", "Webhook latency",
                  "Callbacks hours late", "Events not delivered in real time", "Missing webhook notifications",
                  "Event delivery lag", "webhooks slow again"],
        symptoms=["Webhook events for successful payments are arriving 20-40 minutes after the payment.",
                  "Our endpoint receives payment.succeeded hours late, so orders stay 'pending' in our shop.",
                  "Some webhooks never arrive at all, others show up in bursts.",
                  "The dashboard shows the event as delivered at 10:02 but the payment was at 09:15.",
                  "Callback notifications are lagging badly since {date}.",
                  "We rely on the refund.created event to update inventory and it's delayed by up to 3 hours.",
                  "Event delivery is way slower than the few seconds your docs promise.",
                  "Our logs show we return 200 instantly, so it's not our side - the events are just sent late."],
        details=["Endpoint: https://api.{shop}.example/hooks", "We process about {n} payments a day.",
                 "Retries look fine, it's the first attempt that is late.",
                 "Customers think their orders failed and pay again."],
        shorts=["@BrightwellDev webhooks are 30+ min late again, our customers think their orders failed",
                "webhook events delayed for hours, any status update?"],
        phone=["Developer reports webhook deliveries delayed 30-90 min. Endpoint responding 200. Passed to API team."],
        foreign=[("pt", "Os webhooks estão chegando com horas de atraso.", "Webhooks atrasados"),
                 ("de", "Die Webhooks kommen mit bis zu einer Stunde Verspätung an.", "Webhooks verspätet")]),

    "sync_deleted_files": dict(
        weight=7.5, products=[(SYNC, 100)],
        subjects=["Sync deleted my files", "Files disappeared after sync", "Conflict copies and lost documents",
                  "Sync client removed folder", "Where did my receipts go?", "Data loss after syncing two computers",
                  "URGENT - files gone", "conflict resolution deleted everything"],
        symptoms=["After syncing my laptop and desktop, a bunch of files in my {folder} folder were just gone.",
                  "The sync client showed a conflict and then deleted both versions of the file.",
                  "I edited the same spreadsheet on two machines and after sync the newer version vanished.",
                  "Files are disappearing from the shared folder whenever my colleague's computer syncs.",
                  "It says 'conflict resolved' but the file is not there anymore, not even in the trash.",
                  "Around {n} receipts that were synced last month are missing now.",
                  "The desktop app overwrote my changes with an old copy and then removed the folder."],
        details=["Running Windows 11.", "On macOS 14.", "Sync client version {sversion}.",
                 "We need these for an audit next week.", "Nothing in the recycle bin."],
        shorts=["your sync ate my files. gone. no trash.", "sync conflict = lost documents. great."],
        phone=["Customer reports data loss after sync conflict between two devices; approx {n} files missing. Checked server trash: not present. Escalated as P1."],
        foreign=[("fr", "La synchronisation a supprimé mes fichiers après un conflit.", "Fichiers supprimés"),
                 ("de", "Nach der Synchronisierung sind viele Dateien einfach verschwunden.", "Dateien weg")]),

    "android_app_crash": dict(
        weight=7, products=[(MOBILE, 100)], start="2026-09-18",
        subjects=["App crashes on open", "Crash on Android 15", "App keeps closing", "Won't start after update",
                  "Force close loop", "Instant crash", "app not opening"],
        symptoms=["The app crashes immediately when I open it. I'm on Android 15.",
                  "Opens for a second, white screen, then closes itself.",
                  "Since my phone updated to Android 15 the app won't start at all.",
                  "It keeps force closing every time I tap the icon.",
                  "The app closes itself when I go to the cards tab.",
                  "Crashes at the splash screen, reinstalling didn't help.",
                  "app just shuts down when i try to open it, android 15"],
        details=["{device}, Android 15.", "My wife's older phone on Android 13 is fine.",
                 "Cleared cache and storage, no luck.", "Restarted the phone twice."],
        shorts=["Crashes on startup. Unusable on my {device}.", "1 star until you fix the crash on Android 15",
                "Doesn't even open anymore.", "crash crash crash"],
        phone=["Caller's app crashes at launch on {device} (Android 15). Reinstall done, still crashing. Logged with mobile team.",
               "Customer cannot open app, closes instantly after splash. Android 15. Advised web banking meanwhile."],
        foreign=[("es", "La app se cierra sola al abrirla, tengo Android 15.", "La app se cierra"),
                 ("pt", "O aplicativo fecha sozinho assim que abro.", "App fechando")]),

    "password_reset_link_expired": dict(
        weight=5.5, products=[(MOBILE, 55), (DASH, 45)],
        subjects=["Password reset link expired", "Reset link not working", "Reset email link says invalid",
                  "Can't reset password", "Link expired immediately", "forgot password doesnt work"],
        symptoms=["I click the reset link in the email and it says the link has expired, even though I clicked it within a minute.",
                  "Every password reset link I get says 'This link is invalid or has expired'.",
                  "Requested a new password 4 times, every link is already expired.",
                  "the reset password email arrives but the link is dead",
                  "The reset link opens the login page with an error 'token expired'."],
        details=["I'm opening it on the same phone.", "Tried in an incognito window too.",
                 "I forgot my password after the holidays."],
        shorts=["password reset link always expired. how am i supposed to log in"],
        phone=["Customer cannot reset password; every reset link reports expired. Manual reset sent from admin panel, worked."],
        foreign=[("fr", "Le lien de réinitialisation du mot de passe est toujours expiré.", "Lien expiré"),
                 ("es", "El enlace para restablecer la contraseña dice que ha caducado.", "Enlace caducado")]),

    "slow_payouts": dict(
        weight=5.5, products=[(API, 50), (DASH, 50)],
        subjects=["Payout delayed", "Where is my payout?", "Settlement late", "Funds not in bank account yet",
                  "Payouts taking a week", "missing transfer to bank"],
        symptoms=["Our payout scheduled for {date} still hasn't reached our bank account.",
                  "Payouts used to take 2 business days, now it's a week.",
                  "The dashboard says 'in transit' for {days} days.",
                  "We're a small business and the late settlement means I can't pay suppliers.",
                  "Funds from last week's sales haven't been transferred to my account."],
        details=["Payout amount {amount}.", "Our bank confirms nothing incoming.", "This is the third time this month."],
        shorts=["payouts late again. small businesses need cash flow"],
        phone=["Merchant calling about payout of {amount} pending since {date}. Status 'in transit'. Escalated to finance ops."],
        foreign=[("pt", "O repasse dos pagamentos está atrasado há mais de uma semana.", "Repasse atrasado"),
                 ("es", "Las transferencias a mi cuenta bancaria llevan días de retraso.", "Pagos retrasados")]),

    "unclear_fees": dict(
        weight=4.5, products=[(CARD, 50), (API, 30), (MOBILE, 20)],
        subjects=["What is this fee?", "Unexpected fee", "Fees don't match pricing page", "Foreign transaction fee?",
                  "Unclear charges on statement"],
        symptoms=["There's a {small} fee on my statement called 'SVC ADJ' and nobody can explain what it is.",
                  "Your pricing page says no fees but I was charged a fee for an ATM withdrawal.",
                  "I don't understand how the processing fee was calculated, it's not 1.4% + 20c as advertised.",
                  "Why am I paying a monthly fee on the free plan?",
                  "The currency conversion markup is not shown anywhere before I pay."],
        details=["Please send me a breakdown.", "I've been a customer for 4 years and never paid this before."],
        shorts=["hidden fees again? not cool"],
        phone=["Caller confused by a {small} fee on statement. Explained FX markup; customer still disputes it."],
        foreign=[("de", "Ich verstehe die Gebühren auf meiner Abrechnung nicht.", "Gebühren unklar")]),

    "accessibility_screen_reader": dict(
        weight=3.5, products=[(MOBILE, 60), (DASH, 40)],
        subjects=["Screen reader can't read buttons", "Accessibility problem", "VoiceOver issues",
                  "Text too small, can't zoom", "Keyboard navigation broken"],
        symptoms=["I use VoiceOver and half the buttons in the transfer screen are just read as 'button'.",
                  "TalkBack doesn't announce the amount field, so I can't make payments without help.",
                  "The dashboard can't be navigated with the keyboard; focus gets stuck in the date picker.",
                  "The app ignores my system font size, text is tiny and I have low vision.",
                  "As a blind user I cannot complete a transfer since the redesign."],
        details=["I've been using the app for years without help.", "Please test with real assistive technology."],
        shorts=["new design is not usable with a screen reader. please fix"],
        phone=["Visually impaired caller cannot use transfer screen with TalkBack; labels missing. Logged for accessibility review."],
        foreign=[]),

    "dark_mode_display": dict(
        weight=2.5, products=[(MOBILE, 70), (DASH, 30)],
        subjects=["Dark mode unreadable", "Black text on dark background", "Dark theme bug", "night mode issue"],
        symptoms=["In dark mode the transaction list is black text on a dark grey background, unreadable.",
                  "When the dark theme is on, the charts disappear.",
                  "Dark mode makes the input fields white with white text.",
                  "Night mode switches back to light every time I open the app."],
        details=["iPhone 15, iOS 18.", "Happens on the web dashboard too."],
        shorts=["dark mode is broken, can't read anything", "Dark mode = invisible text. 2 stars."],
        phone=[], foreign=[]),

    "gdpr_data_deletion": dict(
        weight=2.5, products=[(MOBILE, 40), (CARD, 20), (DASH, 20), (SYNC, 20)],
        subjects=["Delete my account and data", "GDPR erasure request", "Request to delete personal data",
                  "Right to be forgotten", "Close account and remove my information"],
        symptoms=["Under GDPR Article 17 I request the deletion of all personal data you hold about me.",
                  "Please close my account and delete all my information.",
                  "I asked 30 days ago to have my data erased and haven't heard back.",
                  "I want a copy of my data and then have it removed from your systems."],
        details=["Please confirm in writing when done.", "My account email is the one I'm writing from."],
        shorts=[], phone=["Caller requests full account closure and erasure of personal data. Sent GDPR form."],
        foreign=[("de", "Ich bitte um Löschung aller meiner personenbezogenen Daten gemäß DSGVO.", "Datenlöschung DSGVO"),
                 ("fr", "Je demande la suppression de toutes mes données personnelles (RGPD).", "Suppression de données")]),
}

# --- tone, openings, closings ---------------------------------------------
GREETINGS = {
    "angry": ["", "Hello,", "To whom it may concern,", "Seriously?"],
    "polite": ["Hi there,", "Hello,", "Dear Brightwell team,", "Good morning,", "Hi support team,"],
    "confused": ["Hi,", "Hello,", "Hey,"],
    "terse": [""],
    "neutral": ["Hi,", "Hello,", "Hi team,", ""],
}
OPENINGS = {
    "angry": ["This is the third time I'm writing about this.", "I am extremely frustrated.",
              "I can't believe this is still happening.", "Your service has been a disaster this week."],
    "polite": ["I hope you're well.", "Sorry to bother you, but I have a problem.", "Thanks for reading this."],
    "confused": ["Not sure if I'm doing something wrong here.", "I'm a bit lost.", "Maybe this is a silly question, but"],
    "terse": [""], "neutral": ["", "I have an issue.", "Reporting a problem."],
}
CLOSINGS = {
    "angry": ["Fix it or I'm closing my account.", "I expect a response today.", "Absolutely unacceptable.",
              "I've been a customer for 6 years and this is how you treat me?", "Don't send me a canned reply."],
    "polite": ["Could you please look into this when you have a moment?", "Many thanks in advance.",
               "Thanks for your help!", "I appreciate any help you can give."],
    "confused": ["Is this a known problem?", "Am I missing a setting somewhere?", "What should I do?",
                 "Is it something on my end?"],
    "terse": ["", "Please fix."], "neutral": ["Thanks.", "Please advise.", "Let me know.", ""],
}
STORY = ["I've already spent an hour on hold and the call dropped twice.",
         "Your chatbot kept sending me to the FAQ page, which doesn't cover this at all.",
         "I run a small bakery and use Brightwell for pretty much everything, so this hurts.",
         "I contacted you through the app chat first and was told someone would email me within 24 hours. That was four days ago.",
         "For context, I've been a customer since 2021 and never had problems until now.",
         "I looked on Reddit and it seems like a lot of people are reporting the same thing, but there's nothing on your status page.",
         "My partner handles most of our finances and she's away this week, so I'm trying to sort this out myself.",
         "I'm not very technical, so please explain in simple steps.",
         "We're a team of 14 and several of us rely on this every day."]
IMPACT = ["This is costing me time and money.", "I need this sorted before the weekend.",
          "Honestly I'm considering moving to another provider.", "It's really stressful.",
          "Our month-end close depends on this."]
NON_NATIVE_OPEN = ["Hello team, I write you because I have a problem.", "Good day. Please I need help urgently.",
                   "Dear sir, kindly assist me with following issue.", "Hello, I am having problem since some days."]

# --- noise -----------------------------------------------------------------
NOISE = {
    "thanks": [("Thank you!", "Thanks, that fixed it!"), ("Re: my ticket", "All good now, you can close this. Cheers"),
               ("Great support", "Just wanted to say the agent I chatted with yesterday, Maria, was great. Thank you!"),
               ("thanks", "thank you so much for the quick refund, really appreciated"),
               ("Re: Re: issue", "Works again. Thanks guys"), ("Resolved", "Never mind, it started working again. Thanks."),
               ("Kudos", "Honestly the best banking app I've used. Keep it up."),
               ("Merci", "Merci beaucoup pour votre aide rapide !"), ("Danke", "Vielen Dank, alles funktioniert wieder.")],
    "spam": [("Boost your rankings", "Boost your website ranking with our SEO services! First page on Google guaranteed. Reply for a free audit."),
             ("Business proposal", "Dear Sir/Madam, we offer high quality backlinks and guest posts at cheap price. Contact us on WhatsApp."),
             ("INVESTMENT OPPORTUNITY", "Earn 300% returns with our crypto trading bot!!! Limited spots, click here: http://bit.ly/xx-profit"),
             ("You have won", "Congratulations! Your email was selected to receive a $1000 gift card. Claim now at http://win-prize.example"),
             ("Website redesign", "Hi, I noticed your website could use a redesign. We build modern sites from $499. Interested?"),
             ("Partnership", "We are a leading lead-generation agency and would love to send you 500 qualified leads per week.")],
    "feature": [("Feature request", "Would be great to have budgeting categories for my spending."),
                ("Apple Watch?", "Please add Apple Watch support so I can check my balance."),
                ("Suggestion", "It would be nice if I could export directly to QuickBooks instead of downloading files."),
                ("Joint accounts", "Can you add joint accounts? My partner and I would both use it."),
                ("Widget", "A home screen widget showing the balance would be really nice."),
                ("idea", "let me name my cards, like 'groceries' and 'travel'"),
                ("API SDK for Go", "Any plans for an official Go SDK for the payments API?"),
                ("Selective sync", "Feature request for the desktop client: let me choose which folders to sync.")],
    "offtopic": [("Jobs", "Are you hiring backend engineers in Berlin?"),
                 ("Sponsorship", "Do you sponsor local youth football clubs? We're looking for a kit sponsor."),
                 ("Address", "what's the address of your HQ, I need to send a document by courier"),
                 ("Wrong company", "Sorry, wrong company, I meant to email my insurance provider."),
                 ("Survey", "I'm a student writing a thesis on fintech apps, could someone answer 5 questions?"),
                 ("press", "Journalist here, looking for a comment on your new office opening.")],
    "empty": [("test", "test"), ("", "."), ("hi", "hi"), ("help", "see subject"), ("(no subject)", "hello?"),
              ("asdf", "asdf"), ("?", "?"), ("", "Sent from my iPhone")],
}
NOISE_KINDS = [("thanks", 30), ("spam", 20), ("feature", 25), ("offtopic", 12), ("empty", 13)]

PLUS_ONE = ["+1 same here", "Same problem for me.", "me too!!", "Same here, any update?", "Also affected.",
            "+1, exactly the same thing happening to me", "Same issue since yesterday"]
FOLLOW_UP = ["Following up on my message from {date}, still not fixed.", "Any update on this? Sent this a few days ago.",
             "Writing again because nobody answered.", "2nd request.", "Resending as I haven't heard back."]


def wchoice(rng, pairs):
    total = sum(w for _, w in pairs)
    x = rng.uniform(0, total)
    for item, w in pairs:
        x -= w
        if x <= 0:
            return item
    return pairs[-1][0]


def fill(rng, text):
    out = text
    for key, values in FILL.items():
        token = "{" + key + "}"
        while token in out:
            out = out.replace(token, rng.choice(values), 1)
    return out


def typo(rng, text):
    """Rough up a text: lowercase, missing apostrophes, swapped letters, no full stops."""
    if rng.random() < 0.6:
        text = text.lower()
    if rng.random() < 0.6:
        text = text.replace("'", "").replace("’", "")
    words = text.split(" ")
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(words))
        w = words[i]
        if len(w) > 4 and w.isalpha():
            j = rng.randrange(1, len(w) - 2)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    text = " ".join(words)
    if rng.random() < 0.4:
        text = text.replace(". ", " ").rstrip(".")
    if rng.random() < 0.3:
        text = text.replace(" you ", " u ").replace("please", "pls")
    return text


def compose(rng, theme, t, channel, tone):
    """Return (subject, body) for one ticket of a theme."""
    subject = fill(rng, rng.choice(t["subjects"]))
    symptom = fill(rng, rng.choice(t["symptoms"]))
    details = [fill(rng, d) for d in rng.sample(t["details"], k=min(len(t["details"]), rng.choice([0, 1, 1, 2])))]
    if t["foreign"] and channel != "phone" and rng.random() < 0.07:
        lang, text, subj = rng.choice(t["foreign"])
        return (subj if rng.random() < 0.7 else subject), fill(rng, text)
    if channel == "phone" and t["phone"]:
        return "Phone call: " + subject.lower(), fill(rng, rng.choice(t["phone"]))
    if channel == "app_review":
        stars = rng.choice(["1 star.", "★☆☆☆☆", "2/5", "★★☆☆☆", "1/5 -", "Rating: 1"])
        line = fill(rng, rng.choice(t["shorts"])) if t["shorts"] and rng.random() < 0.6 else symptom
        return "App Store review", f"{stars} {line}"
    if channel == "social":
        line = fill(rng, rng.choice(t["shorts"])) if t["shorts"] and rng.random() < 0.7 else symptom
        handle = rng.choice(["@BrightwellHelp", "@Brightwell", "@BrightwellHelp", ""])
        return "Social mention", (handle + " " + line).strip()
    if channel == "chat":
        parts = []
        if rng.random() < 0.4:
            parts.append(rng.choice(["hi", "hello", "hey", "hi there", "hello?"]))
        parts.append(symptom if rng.random() < 0.7 else fill(rng, rng.choice(t["shorts"] or t["symptoms"])))
        parts += details[:1]
        if rng.random() < 0.3:
            parts.append(rng.choice(["anyone there?", "hello??", "pls help", "is this a known issue", "ok?"]))
        body = "\n".join(parts)
        if rng.random() < 0.5:
            body = body.lower()
        return rng.choice(["Chat: " + subject, subject, "Live chat", "Chat transcript"]), body
    # email / web_form
    sentences = []
    if rng.random() < 0.08:
        sentences.append(rng.choice(NON_NATIVE_OPEN))
    elif channel == "email":
        sentences.append(rng.choice(OPENINGS[tone]))
    long_form = channel == "email" and rng.random() < 0.3
    if long_form:
        sentences.append(rng.choice(STORY))
        details = [fill(rng, d) for d in rng.sample(t["details"], k=min(len(t["details"]), 3))]
    sentences.append(symptom)
    sentences += details
    if long_form or rng.random() < 0.15:
        sentences.append(rng.choice(IMPACT))
    sentences.append(rng.choice(CLOSINGS[tone]))
    para = " ".join(s for s in sentences if s)
    if channel == "email" and len(details) >= 2 and rng.random() < 0.6:
        para = para.replace(" " + details[1], "\n\n" + details[1], 1)
    if long_form and rng.random() < 0.6:
        para = para.replace(" " + symptom, "\n\n" + symptom, 1)
    if channel == "email":
        greet = rng.choice(GREETINGS[tone])
        sign = rng.choice(["", rng.choice(NAMES), "Best,\n" + rng.choice(NAMES), "Regards, " + rng.choice(NAMES),
                           "Sent from my phone"])
        body = "\n\n".join(x for x in [greet, para, sign] if x)
    else:
        body = para
    return subject, body


def main():
    rng = random.Random(SEED)
    here = os.path.dirname(os.path.abspath(__file__))
    window_start = datetime(2026, 9, 1, tzinfo=timezone.utc)
    window_end = datetime(2026, 10, 31, 23, 59, tzinfo=timezone.utc)

    def when(start=None):
        s = window_start if start is None else datetime.fromisoformat(start + "T00:00:00+00:00")
        secs = int((window_end - s).total_seconds())
        # Recurring issues pile up: bias a little towards the start of their window.
        t = s + timedelta(seconds=int(secs * (rng.random() ** 1.3)))
        return t.replace(second=0)

    n_noise = round(TOTAL * NOISE_SHARE)
    n_real = TOTAL - n_noise
    wsum = sum(t["weight"] for t in THEMES.values())
    counts = {k: round(n_real * t["weight"] / wsum) for k, t in THEMES.items()}
    counts["login_code_not_received"] += n_real - sum(counts.values())

    tickets = []  # (created_at, ticket dict, label)
    for theme, t in THEMES.items():
        own = []
        for i in range(counts[theme]):
            product = wchoice(rng, t["products"])
            channel = wchoice(rng, CHANNELS_BY_PRODUCT[product])
            tier = wchoice(rng, TIER_BY_PRODUCT[product])
            created = when(t.get("start"))
            kind = rng.random()
            if own and kind < 0.05:
                # same customer writes again: follow-up quoting the first message
                prev = rng.choice(own)
                subject = "Re: " + prev["subject"]
                body = fill(rng, rng.choice(FOLLOW_UP)) + "\n\n> " + prev["body"].replace("\n", "\n> ")
                product, channel, tier = prev["product"], prev["channel"], prev["customer_tier"]
                created = datetime.fromisoformat(prev["created_at"].replace("Z", "+00:00")) + timedelta(hours=rng.randint(20, 120))
            elif own and kind < 0.08:
                # copy-paste resend
                prev = rng.choice(own)
                subject, body = prev["subject"], prev["body"]
                product, tier = prev["product"], prev["customer_tier"]
                channel = rng.choice(["email", "web_form", prev["channel"]])
                created = datetime.fromisoformat(prev["created_at"].replace("Z", "+00:00")) + timedelta(minutes=rng.randint(2, 600))
            elif own and kind < 0.12:
                prev = rng.choice(own)
                channel = rng.choice(["social", "chat", "app_review"]) if product == MOBILE else rng.choice(["chat", "web_form"])
                subject = "Same issue" if channel != "social" else "Social mention"
                line = rng.choice(PLUS_ONE)
                body = line if rng.random() < 0.5 else line + " " + typo(rng, prev["subject"])
                created = datetime.fromisoformat(prev["created_at"].replace("Z", "+00:00")) + timedelta(hours=rng.randint(1, 72))
            elif kind < 0.17:
                # two issues in one ticket; labelled with the one the customer leads with
                other_key = rng.choice([k for k in THEMES if k != theme])
                o = THEMES[other_key]
                subject = fill(rng, rng.choice(t["subjects"]))
                second = fill(rng, rng.choice(o["symptoms"]))
                body = (fill(rng, rng.choice(t["symptoms"])) + " " +
                        rng.choice(["Also, ", "And while I'm here: ", "Another thing, ", "Unrelated, but "]) +
                        second[:1].lower() + second[1:] + " " + rng.choice(CLOSINGS["neutral"]))
                channel = rng.choice(["email", "web_form", "chat"])
            else:
                tone = wchoice(rng, [("angry", 22), ("polite", 25), ("confused", 15), ("terse", 18), ("neutral", 20)])
                subject, body = compose(rng, theme, t, channel, tone)
                if rng.random() < 0.15 and channel not in ("phone",):
                    body = typo(rng, body)
            if created > window_end:
                created = window_end - timedelta(minutes=rng.randint(1, 300))
            tk = {"created_at": created.strftime("%Y-%m-%dT%H:%M:00Z"), "channel": channel, "product": product,
                  "customer_tier": tier, "subject": subject, "body": body.strip()}
            own.append(tk)
            tickets.append((tk, theme))

    for i in range(n_noise):
        kind = wchoice(rng, NOISE_KINDS)
        subject, body = rng.choice(NOISE[kind])
        product = rng.choice(PRODUCTS)
        channel = {"spam": "email", "empty": rng.choice(["chat", "web_form", "email"])}.get(kind, wchoice(rng, CHANNELS_BY_PRODUCT[product]))
        if channel == "phone":
            channel = "email"
        if kind in ("thanks", "feature") and rng.random() < 0.3:
            body = typo(rng, body)
        tk = {"created_at": when().strftime("%Y-%m-%dT%H:%M:00Z"), "channel": channel, "product": product,
              "customer_tier": wchoice(rng, TIER_BY_PRODUCT[product]), "subject": subject, "body": body}
        tickets.append((tk, "noise"))

    tickets.sort(key=lambda p: (p[0]["created_at"], p[0]["subject"], p[0]["body"]))
    with open(os.path.join(here, "tickets.jsonl"), "w", encoding="utf-8") as out, \
            open(os.path.join(here, "labels.jsonl"), "w", encoding="utf-8") as lab:
        for i, (tk, theme) in enumerate(tickets, start=1):
            tid = f"T-{i:05d}"
            row = {"id": tid, **tk}
            row = {k: row[k] for k in ["id", "created_at", "channel", "product", "customer_tier", "subject", "body"]}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            lab.write(json.dumps({"id": tid, "theme": theme}) + "\n")

    dist = {}
    for _, theme in tickets:
        dist[theme] = dist.get(theme, 0) + 1
    print(f"{len(tickets)} tickets")
    for theme, c in sorted(dist.items(), key=lambda kv: -kv[1]):
        print(f"  {theme:32} {c:4}  {100 * c / len(tickets):5.1f}%")


if __name__ == "__main__":
    main()
