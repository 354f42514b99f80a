// Who is using the page: a guest (chats kept in this browser) or an account.
// The session cookie is HttpOnly, so the page only ever learns who it is from
// GET /api/me. Sign-in and registration happen in a <dialog> with errors in place;
// so do a signed-in account's password change and "sign out everywhere".

import {
  ApiError, changePassword, getMe, login, logout, logoutEverywhere, register,
} from './api.js';

const $ = (id) => document.getElementById(id);

const MODES = {
  'sign-in': {
    heading: 'Sign in',
    submit: 'Sign in',
    busy: 'Signing in…',
    switchTo: 'register',
    switchLabel: 'Create an account instead',
    intro: 'Chats you had as a guest in this browser move to your account.',
    password: 'current-password',
  },
  register: {
    heading: 'Create an account',
    submit: 'Register',
    busy: 'Creating the account…',
    switchTo: 'sign-in',
    switchLabel: 'I already have an account',
    intro: 'Your chats from this browser stay with you. Passwords need 8 characters or more.',
    password: 'new-password',
  },
};

/** "42 s", "3 min", "2 h" for a Retry-After in seconds. */
function formatWait(seconds) {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.ceil(seconds / 60)} min`;
  return `${Math.ceil(seconds / 3600)} h`;
}

/** What to tell the person about a failed sign-in or registration. */
function authErrorText(err) {
  if (!(err instanceof ApiError)) return `Unexpected error: ${err?.message ?? err}`;
  switch (err.code) {
    case 'invalid_credentials':
      return 'Wrong username or password.';
    case 'username_taken':
      return 'That username is taken. Choose another one, or sign in instead.';
    case 'too_many_attempts':
      return err.retryAfter != null
        ? `Too many failed attempts. Try again in ${formatWait(err.retryAfter)}.`
        : 'Too many failed attempts. Wait a while, then try again.';
    default:
      return err.message; // e.g. 422: what a valid username or password looks like
  }
}

/** What to tell the person about a failed password change. */
function passwordErrorText(err) {
  if (!(err instanceof ApiError)) return `Unexpected error: ${err?.message ?? err}`;
  switch (err.code) {
    case 'wrong_password':
      return 'The current password is wrong.';
    case 'authentication_required':
      return 'This browser is no longer signed in. Reload the page and sign in again.';
    default:
      return authErrorText(err); // too many attempts; 422: what a valid password looks like
  }
}

export class Account {
  user = null;
  #mode = 'sign-in';

  /** onChange(kind, user): kind is 'loaded' | 'registered' | 'signed-in' | 'signed-out'. */
  constructor({ onChange, onError }) {
    this.onChange = onChange;
    this.onError = onError;
    this.name = $('account');
    this.hint = $('account-hint');
    this.signIn = $('sign-in');
    this.signOut = $('sign-out');
    this.adminLink = $('admin-link');
    this.dialog = $('auth-dialog');
    this.form = $('auth-form');
    this.heading = $('auth-heading');
    this.intro = $('auth-intro');
    this.username = $('auth-username');
    this.password = $('auth-password');
    this.submit = $('auth-submit');
    this.modeSwitch = $('auth-mode');
    this.error = $('auth-error');
    this.cancel = $('auth-cancel');
    this.settings = $('account-settings');
    this.accountDialog = $('account-dialog');
    this.passwordForm = $('password-form');
    this.passwordUsername = $('password-username');
    this.currentPassword = $('current-password');
    this.newPassword = $('new-password');
    this.repeatPassword = $('repeat-password');
    this.passwordSubmit = $('password-submit');
    this.passwordError = $('password-error');
    this.passwordDone = $('password-done');
    this.everywhere = $('sign-out-everywhere');

    this.signIn.addEventListener('click', () => this.open('sign-in'));
    this.signOut.addEventListener('click', () => this.#signOut());
    this.modeSwitch.addEventListener('click', () => {
      this.#setMode(MODES[this.#mode].switchTo);
      this.#clearError();
      this.username.focus();
    });
    this.cancel.addEventListener('click', () => this.dialog.close());
    this.form.addEventListener('submit', (e) => { e.preventDefault(); this.#submit(); });
    this.dialog.addEventListener('close', () => {
      this.password.value = '';
      this.#clearError();
    });

    this.settings.addEventListener('click', () => this.openSettings());
    $('account-close').addEventListener('click', () => this.accountDialog.close());
    this.passwordForm.addEventListener('submit', (e) => {
      e.preventDefault();
      this.#changePassword();
    });
    this.everywhere.addEventListener('click', () => this.#signOutEverywhere());
    this.accountDialog.addEventListener('close', () => {
      this.passwordForm.reset();
      this.#clearPasswordMessages();
    });
  }

  get isOpen() { return this.dialog.open || this.accountDialog.open; }

  /** The signed-in account's dialog: change the password, sign out everywhere. */
  openSettings() {
    this.passwordForm.reset();
    this.#clearPasswordMessages();
    this.passwordUsername.value = this.user?.username ?? '';
    this.accountDialog.showModal();
    this.currentPassword.focus();
  }

  /** Ask the server who this browser is (a first visit becomes a guest). */
  async load() {
    this.user = await getMe();
    this.#render();
    return this.user;
  }

  open(mode) {
    this.#setMode(mode);
    this.#clearError();
    this.form.reset();
    this.dialog.showModal();
    this.username.focus();
  }

  #setMode(mode) {
    this.#mode = mode;
    const m = MODES[mode];
    this.form.dataset.mode = mode;
    this.heading.textContent = m.heading;
    this.intro.textContent = m.intro;
    this.submit.textContent = m.submit;
    this.modeSwitch.textContent = m.switchLabel;
    this.password.autocomplete = m.password;
  }

  #render() {
    const u = this.user;
    const guest = !u || u.is_guest;
    this.name.textContent = guest ? 'Guest' : u.username;
    this.name.title = guest ? '' : `Signed in as ${u.username}`;
    this.hint.hidden = !guest;
    this.signIn.hidden = !guest;
    this.signOut.hidden = guest;
    this.settings.hidden = guest;
    this.adminLink.hidden = guest || !u.is_admin; // the page itself checks again: a 404 else
    document.body.dataset.account = guest ? 'guest' : 'user';
  }

  #clearError() {
    this.error.hidden = true;
    this.error.textContent = '';
    this.username.removeAttribute('aria-invalid');
    this.password.removeAttribute('aria-invalid');
  }

  #showError(err) {
    this.error.textContent = authErrorText(err);
    this.error.hidden = false;
    const param = err instanceof ApiError ? err.param : '';
    const field = err?.code === 'username_taken' || param === 'username' ? this.username
      : param === 'password' ? this.password : null;
    if (err?.code === 'invalid_credentials') {
      this.password.setAttribute('aria-invalid', 'true');
      this.password.select();
      this.password.focus();
    } else if (field) {
      field.setAttribute('aria-invalid', 'true');
      field.focus();
    }
  }

  async #submit() {
    const username = this.username.value.trim();
    const password = this.password.value;
    this.#clearError();
    if (!username || !password) {
      this.error.textContent = 'Enter a username and a password.';
      this.error.hidden = false;
      (username ? this.password : this.username).focus();
      return;
    }
    const mode = this.#mode;
    const m = MODES[mode];
    this.submit.disabled = true;
    this.modeSwitch.disabled = true;
    this.submit.textContent = m.busy;
    try {
      this.user = mode === 'register'
        ? await register(username, password)
        : await login(username, password);
    } catch (err) {
      this.#showError(err);
      return;
    } finally {
      this.submit.disabled = false;
      this.modeSwitch.disabled = false;
      this.submit.textContent = MODES[this.#mode].submit;
    }
    this.#render();
    this.dialog.close();
    this.onChange(mode === 'register' ? 'registered' : 'signed-in', this.user);
  }

  async #signOut() {
    this.signOut.disabled = true;
    try {
      await logout();
      await this.#becomeGuest();
    } catch (err) {
      this.onError(err);
    } finally {
      this.signOut.disabled = false;
    }
  }

  async #becomeGuest() {
    this.user = await getMe(); // a fresh guest
    this.#render();
    this.onChange('signed-out', this.user);
  }

  #clearPasswordMessages() {
    this.passwordError.hidden = true;
    this.passwordError.textContent = '';
    this.passwordDone.hidden = true;
    this.passwordDone.textContent = '';
    for (const field of [this.currentPassword, this.newPassword, this.repeatPassword]) {
      field.removeAttribute('aria-invalid');
    }
  }

  #showPasswordError(text, field) {
    this.passwordError.textContent = text;
    this.passwordError.hidden = false;
    if (field) {
      field.setAttribute('aria-invalid', 'true');
      field.select();
      field.focus();
    }
  }

  async #changePassword() {
    const current = this.currentPassword.value;
    const next = this.newPassword.value;
    this.#clearPasswordMessages();
    if (!current) {
      this.#showPasswordError('Enter your current password.', this.currentPassword);
      return;
    }
    if (!next) {
      this.#showPasswordError('Enter a new password.', this.newPassword);
      return;
    }
    if (next !== this.repeatPassword.value) {
      this.#showPasswordError('The two new passwords differ.', this.repeatPassword);
      return;
    }
    this.passwordSubmit.disabled = true;
    this.everywhere.disabled = true;
    this.passwordSubmit.textContent = 'Changing…';
    try {
      this.user = await changePassword(current, next);
    } catch (err) {
      const field = err?.code === 'wrong_password' ? this.currentPassword
        : err instanceof ApiError && err.param === 'new_password' ? this.newPassword : null;
      this.#showPasswordError(passwordErrorText(err), field);
      return;
    } finally {
      this.passwordSubmit.disabled = false;
      this.everywhere.disabled = false;
      this.passwordSubmit.textContent = 'Change password';
    }
    this.passwordForm.reset();
    this.passwordUsername.value = this.user?.username ?? '';
    this.passwordDone.textContent = 'Password changed. Every other browser is signed out.';
    this.passwordDone.hidden = false;
  }

  async #signOutEverywhere() {
    this.#clearPasswordMessages();
    this.everywhere.disabled = true;
    this.passwordSubmit.disabled = true;
    try {
      await logoutEverywhere();
    } catch (err) {
      this.#showPasswordError(`Cannot sign out everywhere: ${passwordErrorText(err)}`, null);
      return;
    } finally {
      this.everywhere.disabled = false;
      this.passwordSubmit.disabled = false;
    }
    this.accountDialog.close();
    try {
      await this.#becomeGuest();
    } catch (err) {
      this.onError(err);
    }
  }
}
