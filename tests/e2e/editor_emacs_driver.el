;;; editor_emacs_driver.el --- drives lspilot.el in batch Emacs for test_emacs.py  -*- lexical-binding: t; -*-

;; SPDX-License-Identifier: Apache-2.0

;;; Commentary:

;; Run by tests/e2e/test_emacs.py:
;;   emacs --batch -Q -l editors/emacs/lspilot.el -l tests/e2e/editor_emacs_driver.el
;; with LSPILOT_E2E_FILE (the file to edit), LSPILOT_E2E_SERVER (the server command, JSON list),
;; LSPILOT_E2E_CASES (JSON list of {line, col, utf16, type}) in the environment.  Types each
;; case's keys through the command loop hooks, waits for the suggestion, and prints one line
;; "LSPILOT-RESULT <json>" per case for the Python side to check against the server.

;;; Code:

(require 'json)
(require 'package)
(add-to-list 'package-directory-list "/usr/share/emacs/site-lisp/elpa")
(package-initialize)
(require 'eglot)
(require 'python)
(require 'lspilot)

;; Batch Emacs is never idle, so idle timers never fire: run lspilot's as plain timers.
(advice-add 'run-with-idle-timer :override #'run-with-timer)

(defun lspilot-test--json (key)
  (json-parse-string (getenv key) :object-type 'plist :array-type 'list))

(defun lspilot-test--wait (pred what &optional timeout)
  (let ((deadline (+ (float-time) (or timeout 30))))
    (while (and (not (funcall pred)) (< (float-time) deadline))
      (accept-process-output nil 0.02))
    (unless (funcall pred)
      (error "Timed out waiting for %s" what))))

(defun lspilot-test--command (cmd &optional event)
  "Run CMD as the command loop would, with the hooks around it."
  (setq this-command cmd last-command-event event)
  (run-hooks 'pre-command-hook)
  (call-interactively cmd)
  (run-hooks 'post-command-hook)
  (setq last-command cmd))

(defun lspilot-test--type (string)
  (dolist (ch (string-to-list string))
    (lspilot-test--command 'self-insert-command ch)))

(defun lspilot-test--settled ()
  (and lspilot--current (lspilot--suggestion-final lspilot--current)
       (null lspilot--pending) (lspilot-current-text)))

(defun lspilot-test--emit (plist)
  (princ (format "LSPILOT-RESULT %s\n" (json-encode plist))))

(let* ((file (getenv "LSPILOT_E2E_FILE"))
       (server-cmd (lspilot-test--json "LSPILOT_E2E_SERVER"))
       (cases (lspilot-test--json "LSPILOT_E2E_CASES"))
       (partials 0))
  (setq lspilot-command server-cmd
        lspilot-idle-delay 0.01
        eglot-sync-connect 30
        eglot-connect-timeout 60)
  (lspilot-eglot-setup '(python-mode))
  (find-file file)
  (python-mode)
  (apply #'eglot (eglot--guess-contact))
  (lspilot-test--wait (lambda () (bound-and-true-p eglot--managed-mode)) "eglot to manage the buffer")
  (lspilot-mode 1)
  ;; Count partial texts drawn, to show the progressive path works.
  (advice-add 'lspilot--render :after
              (lambda (&rest _)
                (when (and lspilot--current (not (lspilot--suggestion-final lspilot--current))
                           (lspilot-current-text))
                  (cl-incf partials))))
  (let ((server (eglot-current-server)) sent)
    (advice-add 'lspilot--request :after
                (lambda (&rest _) (when lspilot--pending
                                    (setq sent (lspilot--request-position lspilot--pending)))))
    (dolist (case cases)
      (goto-char (point-min))
      (forward-line (plist-get case :line))
      (forward-char (plist-get case :col))
      (if (not (eq (plist-get case :burst) t))
          (lspilot-test--type (plist-get case :type))
        ;; Each key while the previous key's request is in flight.
        (dolist (ch (string-to-list (plist-get case :type)))
          (lspilot-test--type (string ch))
          (lspilot-test--wait (lambda () lspilot--pending) "a request in flight")))
      (lspilot-test--wait #'lspilot-test--settled "a final suggestion")
      (let* ((ghost (lspilot-current-text))
             (before (buffer-substring-no-properties (point-min) (point-max)))
             (pt (point))
             (binding (key-binding (kbd "TAB")))
             (overlays (cl-count-if (lambda (o) (overlay-get o 'lspilot))
                                    (overlays-in (point-min) (point-max))))
             (answer (jsonrpc-request
                      server :textDocument/inlineCompletion
                      `(:textDocument (:uri ,(eglot--path-to-uri buffer-file-name))
                        :position (:line ,(plist-get case :line)
                                   :character ,(plist-get case :utf16))
                        :context (:triggerKind 2))))
             (items (if (vectorp answer) answer (plist-get answer :items)))
             word-buffer word-ghost)
        (lspilot-test--command 'lspilot-accept-word)
        (setq word-buffer (buffer-substring-no-properties (point-min) (point-max))
              word-ghost (lspilot-current-text))
        (lspilot-test--command binding ?\t)
        (lspilot-test--emit
         (list :sent sent :ghost ghost :before before :point (1- pt)
               :binding (symbol-name binding) :overlays overlays
               :answer (if (> (length items) 0) (aref items 0) nil)
               :word_buffer word-buffer :word_ghost (or word-ghost nil)
               :after (buffer-substring-no-properties (point-min) (point-max))
               :after_point (1- (point)) :partials partials))
        (lspilot-dismiss)))
    (lspilot-test--emit (list :status (lspilot-status)))
    (set-buffer-modified-p nil)
    (kill-emacs 0)))

;;; editor_emacs_driver.el ends here
